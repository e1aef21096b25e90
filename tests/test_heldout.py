"""tests/heldout_tasks.py, issue 27's held-out suite: the folder it writes loads as four TRACE tasks
of the right sizes, inside the length rules, with no test prompt in train, the same for a seed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from heldout_tasks import HELDOUT_GENERATORS, heldout_tasks

import tasks

HERE = Path(__file__).resolve().parent
NAMES = ["count", "plural", "sort", "upper"]  # load_tasks' order: by folder name


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The suite as the command writes it (seed 0), read back by tasks.load_tasks."""
    out = tmp_path_factory.mktemp("heldout") / "suite"
    run = subprocess.run(
        [sys.executable, str(HERE / "heldout_tasks.py"), f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return out, tasks.load_tasks(str(out))


def test_the_written_folder_loads_as_four_tasks_of_2000_and_200(written):
    _, suite = written
    assert [name for name, _, _ in suite] == NAMES
    assert sorted(HELDOUT_GENERATORS) == NAMES
    for name, train, test in suite:
        assert (len(train), len(test)) == (2000, 200), name


def test_no_test_prompt_in_train_and_test_prompts_distinct(written):
    for name, train, test in written[1]:
        test_prompts = [r["prompt"] for r in test]
        assert len(set(test_prompts)) == len(test_prompts), name
        assert not set(test_prompts) & {r["prompt"] for r in train}, name


def test_every_record_keeps_the_length_rules(written):
    """Instruction word first, "A: " last, answers without a leading space, prompts <= 80 ASCII
    characters, answers <= 8."""
    word = {"count": "Count: ", "sort": "Sort: ", "plural": "Plural: ", "upper": "Upper: "}
    for name, train, test in written[1]:
        for r in train + test:
            assert r["prompt"].startswith(word[name]) and r["prompt"].endswith("A: "), r
            assert r["prompt"].isascii() and len(r["prompt"]) <= 80, r
            assert r["answer"].isascii() and 1 <= len(r["answer"]) <= 8, r
            assert r["answer"] == r["answer"].strip(), r


def test_answers_follow_each_tasks_rule(written):
    """Each answer recomputed from its prompt by a second, naive reading of the rule."""
    suite = {name: train + test for name, train, test in written[1]}
    for r in suite["count"]:
        assert r["answer"] == str(len(r["prompt"].split()) - 2)  # minus "Count:" and "A:"
    for r in suite["sort"]:
        digits = r["prompt"].split()[1]
        assert len(digits) == 3 and r["answer"] == "".join(sorted(digits))
    for r in suite["plural"]:
        noun = r["prompt"].split()[1]
        if noun.endswith(("s", "x", "z", "ch", "sh")):
            want = noun + "es"
        elif noun.endswith("y") and noun[-2] not in "aeiou":
            want = noun[:-1] + "ies"
        else:
            want = noun + "s"
        assert r["answer"] == want, r
    for r in suite["upper"]:
        assert r["answer"] == r["prompt"].split()[1].upper()


def test_the_same_seed_writes_the_same_suite_and_another_differs(written, tmp_path):
    out, _ = written
    assert heldout_tasks(seed=0) == tasks.load_tasks(str(out), ["count", "sort", "plural", "upper"])
    assert heldout_tasks(seed=1) != heldout_tasks(seed=0)
    tasks.write_tasks(heldout_tasks(seed=0), tmp_path / "again")
    for name in NAMES:
        for split in ("train", "test"):
            a = json.loads((out / name / f"{split}.json").read_text())
            b = json.loads((tmp_path / "again" / name / f"{split}.json").read_text())
            assert a == b, (name, split)


def test_the_command_refuses_a_bad_flag_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, str(HERE / "heldout_tasks.py"), f"--dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--out=DIR" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())

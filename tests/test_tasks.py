"""tasks.py, the continual-learning task suite: builtin tasks, TRACE-layout folders, encoding,
the command line."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import data
import tasks
from data import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def builtin():
    return tasks.builtin_tasks(seed=0)


def small_tasks():
    return [
        ("beta", [{"prompt": "b1 A: ", "answer": "x"}], [{"prompt": "b2 A: ", "answer": "y"}]),
        (
            "alpha",
            [{"prompt": "a1 A: ", "answer": "1"}, {"prompt": "a2 A: ", "answer": "2"}],
            [{"prompt": "a3 A: ", "answer": "3"}],
        ),
    ]


# ----------------------------------------------------------------------------- builtin tasks


def test_builtin_tasks_are_deterministic_per_seed(builtin):
    assert tasks.builtin_tasks(seed=0) == builtin
    other = tasks.builtin_tasks(seed=1)
    for (name, train, test), (name1, train1, test1) in zip(builtin, other):
        assert name == name1 and train != train1 and test != test1


def test_builtin_tasks_shape_and_limits(builtin):
    names = [name for name, _, _ in builtin]
    assert tuple(names) == tasks.BUILTIN_TASKS and len(set(names)) == len(names) >= 6
    instructions = set()
    for name, train, test in builtin:
        assert (len(train), len(test)) == (2000, 200)
        # the instruction word before the first ':'
        heads = {r["prompt"].split(":")[0] for r in train + test}
        assert len(heads) == 1, (name, heads)
        instructions |= heads
        for r in train + test:
            assert (
                set(r) == {"prompt", "answer"}
                and isinstance(r["prompt"], str)
                and isinstance(r["answer"], str)
            )
            assert len(r["prompt"]) <= 80 and 1 <= len(r["answer"]) <= 8, r
            assert r["prompt"].endswith("A: ") and r["answer"] == r["answer"].strip(), r
            assert (r["prompt"] + r["answer"]).isascii(), r
        assert len({r["prompt"] for r in test}) == len(test)  # test prompts are distinct ...
        # ... and never seen in train
        assert not {r["prompt"] for r in test} & {r["prompt"] for r in train}
    assert len(instructions) == len(builtin)  # every task has its own instruction


def test_builtin_sizes_and_too_small_a_prompt_space():
    suite = tasks.builtin_tasks(seed=3, n_train=50, n_test=7)
    assert [(len(train), len(test)) for _, train, test in suite] == [(50, 7)] * len(
        tasks.BUILTIN_TASKS
    )
    with pytest.raises(DataError, match="sentiment.*too few distinct prompts"):
        tasks.builtin_tasks(n_test=7000)  # sentiment has 6240 distinct reviews


def by_name(suite):
    return {name: train + test for name, train, test in suite}


def test_sentiment_label_follows_words_and_negation(builtin):
    for r in by_name(builtin)["sentiment"]:
        words = re.findall(r"[a-z]+", r["prompt"].split("was", 1)[1])
        positive = any(w in tasks.POSITIVE for w in words)
        assert positive != any(w in tasks.NEGATIVE for w in words), r  # one polarity per review
        assert r["answer"] == ("positive" if positive != ("not" in words) else "negative"), r


def test_arithmetic_answers_recomputed(builtin):
    for r in by_name(builtin)["arithmetic"]:
        a, b = map(int, re.findall(r"\d+", r["prompt"]))
        # one-step sums below 10: learnable on CPU
        assert 1 <= a <= 9 and 1 <= b <= 9 and " more." in r["prompt"]
        assert r["answer"] == str(a + b), r


def test_python_answers_are_what_python_prints(builtin):
    for r in by_name(builtin)["python"][:300]:
        code = r["prompt"].removeprefix("Python: ").removesuffix(" Output? A: ")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {})
        assert out.getvalue() == r["answer"] + "\n" and int(r["answer"]) >= 0, r


def test_cipher_translates_word_by_word(builtin):
    records = by_name(builtin)["cipher"]
    for r in records:
        words = r["prompt"].removeprefix("Translate: ").removesuffix(" A: ").split()
        assert r["answer"].split() == [tasks.CIPHER[w] for w in words], r
    assert {len(r["answer"].split()) for r in records} == {1, 2}


def test_extract_and_reverse_answers_recomputed(builtin):
    records = by_name(builtin)
    for r in records["extract"]:
        record, asked = re.fullmatch(r"Record: (.*)\. (\w+)\? A: ", r["prompt"]).groups()
        assert dict(field.split("=") for field in record.split("; "))[asked] == r["answer"], r
        assert asked in ("name", "city"), r
    for r in records["reverse"]:
        s = r["prompt"].removeprefix("Reverse: ").removesuffix(" A: ")
        assert len(s) == 3 and s.isdigit() and r["answer"] == "".join(reversed(s)), r


# ----------------------------------------------------------------------- folders in TRACE's layout


def test_write_then_load_round_trips_in_name_order(tmp_path, builtin):
    tasks.write_tasks(builtin, tmp_path / "suite")
    assert (tmp_path / "suite" / "python" / "train.json").is_file()
    loaded = tasks.load_tasks(str(tmp_path / "suite"))
    assert loaded == sorted(builtin)  # same records, tasks sorted by folder name
    order = list(tasks.BUILTIN_TASKS)
    assert tasks.load_tasks(str(tmp_path / "suite"), order=order) == builtin


def test_a_killed_write_leaves_no_suite_and_a_cut_file_says_how_to_write_it_again(
    tmp_path, builtin, monkeypatch
):
    """write_tasks writes the suite under a temporary name: killed after two files, nothing that
    could pass for a (smaller) suite is left. A cut copy of a written file is one DataError that
    names the file and the command that writes it again."""
    real_dump = json.dump
    dumps = []

    def dump_then_die(*args, **kw):
        real_dump(*args, **kw)
        dumps.append(1)
        if len(dumps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tasks.json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        tasks.write_tasks(builtin, tmp_path / "suite")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    tasks.write_tasks(builtin, tmp_path / "suite")
    path = tmp_path / "suite" / "cipher" / "train.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cipher/train.json line \d+: not valid JSON") as e:
        tasks.load_tasks(str(tmp_path / "suite"))
    assert "python tasks.py --write_tasks=DIR" in str(e.value) and "\n" not in str(e.value)


def test_order_picks_and_reorders_builtin_too(tmp_path):
    assert [name for name, _, _ in tasks.load_tasks("builtin")] == list(tasks.BUILTIN_TASKS)
    picked = tasks.load_tasks("builtin", order=["reverse", "sentiment"], seed=2)
    full = by_name(tasks.builtin_tasks(seed=2))
    assert [name for name, _, _ in picked] == ["reverse", "sentiment"]
    assert [train + test for _, train, test in picked] == [full["reverse"], full["sentiment"]]

    tasks.write_tasks(small_tasks(), tmp_path)
    assert [name for name, _, _ in tasks.load_tasks(str(tmp_path))] == ["alpha", "beta"]
    assert tasks.load_tasks(str(tmp_path), order=["beta", "alpha"]) == small_tasks()


def test_jsonl_files_are_accepted(tmp_path):
    task = tmp_path / "t"
    task.mkdir()
    records = [
        {"prompt": "q1 A: ", "answer": "1"},
        {"prompt": "q2 A: ", "answer": "2", "source": "extra"},
    ]
    # blank lines skipped
    (task / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    (task / "test.json").write_text(json.dumps(records[:1]))
    [(name, train, test)] = tasks.load_tasks(str(tmp_path))
    assert name == "t" and test == records[:1]
    # keys other than prompt/answer dropped
    assert train == [
        records[0],
        {"prompt": "q2 A: ", "answer": "2"},
    ]


def write_task(root, name, train, test, train_name="train.json"):
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / train_name).write_text(train)
    (root / name / "test.json").write_text(test)


GOOD = json.dumps([{"prompt": "p A: ", "answer": "a"}])


def test_folder_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"--tasks=.*nowhere: no such folder.*--tasks=builtin"):
        tasks.load_tasks(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty has no task sub-folders.*<task>/train.json"):
        tasks.load_tasks(str(tmp_path / "empty"))
    (tmp_path / "notest" / "t").mkdir(parents=True)
    (tmp_path / "notest" / "t" / "train.json").write_text(GOOD)
    with pytest.raises(DataError, match=r"notest/t has no test.json or test.jsonl"):
        tasks.load_tasks(str(tmp_path / "notest"))
    write_task(tmp_path / "both", "t", GOOD, GOOD)
    (tmp_path / "both" / "t" / "train.jsonl").write_text(GOOD)
    with pytest.raises(DataError, match=r"both train.json and train.jsonl"):
        tasks.load_tasks(str(tmp_path / "both"))


@pytest.mark.parametrize(
    "train_name, text, match",
    [
        (
            "train.json",
            '[\n {"prompt": "p", "answer": "a"},\n {"prompt": "p" "answer": "a"}\n]',
            r"train.json line 3: not valid JSON",
        ),
        (
            "train.jsonl",
            '{"prompt": "p", "answer": "a"}\n{"prompt": "p",\n',
            r"train.jsonl line 2: not valid JSON",
        ),
        ("train.json", '{"prompt": "p", "answer": "a"}', r"train.json is not a JSON list"),
        ("train.json", "[]", r"train.json has no records"),
        ("train.jsonl", "\n", r"train.jsonl has no records"),
        (
            "train.json",
            '[{"prompt": "p", "answer": "a"}, {"prompt": "p", "answer": 3}]',
            r"train.json: record 1 \(0-based\) has no string \"answer\"",
        ),
        (
            "train.json",
            '[{"prompt": "p", "answer": "a"}, ["p", "a"]]',
            r"train.json: record 1 .*has no string \"prompt\"",
        ),
        (
            "train.jsonl",
            '{"prompt": "p", "answer": "a"}\n\n{"answer": "a"}\n',
            r"train.jsonl: record 1 \(0-based, line 3\) has no string \"prompt\"",
        ),
        (
            "train.json",
            '[{"prompt": "p", "answer": "a"}, {"prompt": "p", "answer": ""}]',
            r"train.json: record 1 \(0-based\) has an empty \"answer\" \(''\)",
        ),
        (
            "train.jsonl",
            '{"prompt": "p", "answer": "a"}\n{"prompt": "p", "answer": " \\t\\n"}\n',
            r"train.jsonl: record 1 \(0-based, line 2\) has an empty \"answer\" \(' \\t\\n'\)",
        ),
    ],
)
def test_bad_task_files_name_the_file_and_place(tmp_path, train_name, text, match):
    write_task(tmp_path, "t", text, GOOD, train_name)
    with pytest.raises(DataError, match=match) as e:
        tasks.load_tasks(str(tmp_path))
    assert "\n" not in str(e.value)


def test_an_empty_test_answer_is_refused_in_one_line(tmp_path):
    records = [{"prompt": "p A: ", "answer": "ok"}, {"prompt": "q A: ", "answer": ""}]
    write_task(tmp_path, "t", GOOD, json.dumps(records))
    with pytest.raises(DataError) as e:
        tasks.load_tasks(str(tmp_path))
    assert str(e.value) == (
        f"{tmp_path / 't' / 'test.json'}: record 1 (0-based) has an empty \"answer\" (''); "
        "give it the expected output or remove the record"
    )


def test_an_empty_test_split_is_refused(tmp_path):
    write_task(tmp_path, "t", GOOD, "[]")
    with pytest.raises(DataError, match=r"t/test.json has no records"):
        tasks.load_tasks(str(tmp_path))


def test_unknown_or_repeated_order_names(tmp_path):
    with pytest.raises(DataError, match=r"'cypher'.*sentiment, arithmetic.*did you mean cipher\?"):
        tasks.load_tasks("builtin", order=["sentiment", "cypher"])
    tasks.write_tasks(small_tasks(), tmp_path)
    with pytest.raises(
        DataError, match=r"'gamma', which is not a task in .*\(tasks: alpha, beta\)$"
    ):
        tasks.load_tasks(str(tmp_path), order=["gamma"])
    with pytest.raises(DataError, match=r"lists alpha more than once"):
        tasks.load_tasks(str(tmp_path), order=["alpha", "beta", "alpha"])


# ----------------------------------------------------------------------------- tokens


def test_encode_record_splits_exactly_and_ends_with_eot(builtin):
    tok = data.get_tokenizer("bytes")
    for _, train, test in builtin:
        for r in train[:20] + test[:20]:
            p, a = tasks.encode_record(tok, r)
            assert a[-1] == tok.eot and tok.eot not in p + a[:-1]
            assert tok.decode(p) == r["prompt"] and tok.decode(a) == r["answer"]
            assert tok.decode(p + a) == r["prompt"] + r["answer"]


def test_check_task_lengths(builtin):
    tok = data.get_tokenizer("bytes")
    # the builtin limits, in bytes (eot is a target, not an input)
    tasks.check_task_lengths(builtin, tok, 80 + 8)
    with pytest.raises(
        DataError, match=r"task sentiment: train record 0 is \d+ tokens.*--block_size=16"
    ):
        tasks.check_task_lengths(builtin, tok, 16)
    suite = [("t", [{"prompt": "abc", "answer": "d"}], [{"prompt": "abcdef", "answer": "g"}])]
    tasks.check_task_lengths(suite, tok, 7)
    with pytest.raises(
        DataError, match=r"task t: test record 0 is 7 tokens.*--block_size=7 or more"
    ):
        tasks.check_task_lengths(suite, tok, 6)


def test_task_length_advice_names_the_block_that_fits(builtin):
    """The error's --block_size=N is the longest record: N passes, N - 1 is refused naming N."""
    tok = data.get_tokenizer("bytes")
    with pytest.raises(DataError, match=r"pass --block_size=(\d+) or more") as e:
        tasks.check_task_lengths(builtin, tok, 16)
    need = int(re.search(r"--block_size=(\d+) or more", str(e.value)).group(1))
    tasks.check_task_lengths(builtin, tok, need)
    with pytest.raises(DataError, match=f"--block_size={need} or more"):
        tasks.check_task_lengths(builtin, tok, need - 1)


# ----------------------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "tasks.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cli_writes_the_builtin_tasks(tmp_path):
    r = run_cli(f"--write_tasks={tmp_path / 'suite'}", "--seed=1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(tasks.BUILTIN_TASKS) and all(
        "2000 train, 200 test" in line for line in lines
    )
    assert tasks.load_tasks(
        str(tmp_path / "suite"), order=list(tasks.BUILTIN_TASKS)
    ) == tasks.builtin_tasks(seed=1)


def test_cli_bad_usage_is_one_line_and_exit_2():
    r = run_cli("--out=x")
    assert r.returncode == 2 and r.stdout == ""
    usage = "usage: python tasks.py --write_tasks=DIR [--seed=N]"
    assert r.stderr == f"error: unexpected argument '--out=x'; {usage}\n"


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "--write_tasks=DIR is required"),
        (["--write_tasks"], "unexpected"),
        (["--write_tasks=x", "--seed=one"], "--seed=one is not an integer"),
        (["x"], "unexpected argument 'x'"),
    ],
)
def test_cli_usage_errors(args, match):
    with pytest.raises(DataError, match=match + ".*usage: python tasks.py"):
        tasks.main(args)

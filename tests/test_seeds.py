"""compare.py --mode=seeds (also `eval.py --mode=seeds`): runs that differ only in --seed pooled
into mean ± std, against statistics computed here."""

import json
import statistics

import pytest

import compare
from plumbing import ConfigError

LOSSES = {
    ("standard", 4): [1.80, 1.83, 1.79],
    ("standard", 8): [1.76, 1.77, 1.78],
    ("diff", 4): [2.05, 2.00, 2.06],
    ("diff", 8): [2.04, 1.96, 1.99],
}


def fake_run(folder, attention, n_head, seed, val_loss, rows=True, **fields):
    """A run folder as train.py leaves it: config.json (plus `fields`) and log.jsonl with two budget
    rows."""
    folder.mkdir(parents=True)
    cfg = dict(
        preset="cpu",
        n_layer=4,
        n_embd=256,
        n_head=n_head,
        dataset="stdlib",
        seed=seed,
        attention=attention,
        lr=2e-3,
        out_dir=str(folder),
        **fields,
    )
    (folder / "config.json").write_text(json.dumps(cfg))
    log = [{"iter": 0, "loss": 5.0, "tokens": 0}]
    if rows:
        log += [
            {"iter": 150, "budget": 150, "val_loss": val_loss + 0.5, "tokens": 300},
            {"iter": 300, "budget": 300, "val_loss": val_loss, "tokens": 600},
        ]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    return [
        fake_run(tmp_path / f"{a}-h{h}-s{i}", a, h, i, v)
        for (a, h), losses in LOSSES.items()
        for i, v in enumerate(losses)
    ]


def test_groups_are_pooled_over_seeds_only(runs, tmp_path, capsys):
    path = compare.seeds_report(runs, "n_head", str(tmp_path / "fig.png"))
    out = capsys.readouterr().out
    assert path.exists() and path.stat().st_size > 10_000
    for (a, h), losses in LOSSES.items():
        row = [
            l
            for l in out.splitlines()
            if l.startswith(f"attention={a}, n_head={h} ") and " 300 " in l
        ]
        assert len(row) == 1, out
        mean, std = statistics.mean(losses), statistics.stdev(losses)  # sample std, as reported
        assert (
            f"{mean:.4f} ± {std:.4f}" in row[0]
            and f"{losses[0]:.4f} {losses[1]:.4f} {losses[2]:.4f}" in row[0]
        )
    assert "lr=" not in out  # fields every run shares are not in the labels


def test_plot_lines_group_everything_but_x(runs):
    lines = compare.pooled(compare.finished_runs(runs), ("seed", "out_dir", "n_head"))
    assert [label for label, _ in lines] == ["attention=standard", "attention=diff"]
    assert [len(members) for _, members in lines] == [6, 6]


def test_unfinished_run_and_bad_field_are_one_line_errors(runs, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no finished model"):
        compare.seeds_report(
            runs + [fake_run(tmp_path / "late", "diff", 4, 9, 0.0, rows=False)], "", ""
        )
    capsys.readouterr()
    with pytest.raises(ConfigError, match="not a numeric field"):
        compare.seeds_report(runs, "attention", str(tmp_path / "x.png"))
    assert capsys.readouterr().out == ""  # no table before the error


def test_a_field_of_another_attention_type_neither_splits_nor_labels_a_group(tmp_path):
    runs = [
        fake_run(
            tmp_path / f"{a}-{subln}-s{seed}", a, 4, seed, 1.8, diff_subln=subln
        )  # only diff reads it
        for subln in (True, False)
        for seed in (1, 2)
        for a in ("standard", "diff")
    ]
    runs.append(
        fake_run(tmp_path / "diff-older-s3", "diff", 4, 3, 1.8)
    )  # its config.json predates --diff_subln
    lines = compare.pooled(compare.finished_runs(runs), ("seed", "out_dir"))
    assert [(label, len(members)) for label, members in lines] == [
        ("attention=standard", 4),
        ("attention=diff, diff_subln=True", 3),
        ("attention=diff, diff_subln=False", 2),
    ]


def test_fields_that_change_no_number_do_not_split_a_group(tmp_path):
    """A seed resumed after a kill, or run with its DAPE rows in chunks, is still a seed of its
    group."""
    run = lambda name, seed, wd=0.1, **fields: fake_run(
        tmp_path / name,
        "dape",
        4,
        seed,
        1.8,
        weight_decay=wd,
        **{"resume": False, "dape_q_chunk": 0, **fields},
    )
    runs = [
        run("s1", 1),
        run("s2", 2),
        run("s3-resumed", 3, resume=True, dape_q_chunk=64),
        run("s4", 4, log_interval=50, activation_checkpointing=True),
        run("s1-wd0", 1, wd=0.0),
    ]
    lines = compare.pooled(
        compare.finished_runs(runs), compare.POOLED_OVER
    )  # weight decay changes the numbers
    assert [(label, len(members)) for label, members in lines] == [
        ("weight_decay=0.1", 4),
        ("weight_decay=0.0", 1),
    ]


def test_eval_py_hands_the_mode_to_compare(runs, capsys):
    """`python eval.py --mode=seeds ...` as before the split: the same table as compare.py's."""
    import eval as evaluate

    compare.main(["--mode=seeds", f"--run={','.join(runs)}"])
    direct = capsys.readouterr().out
    evaluate.main(["--mode=seeds", f"--run={','.join(runs)}"])
    assert capsys.readouterr().out == direct and "each seed" in direct

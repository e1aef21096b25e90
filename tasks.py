"""The continual-learning task suite and the TRACE loader: what continual.py fine-tunes on.

A task is (name, train, test), each split a list of {"prompt": str, "answer": str} records
(TRACE's format).

builtin   six generated tasks (BUILTIN_TASKS, from a seed): builtin_tasks(seed)
DIR       TRACE's layout, DIR/<task>/{train,test}.json (or .jsonl): load_tasks(DIR, order)
encoding  encode_record(tok, record) -> (prompt ids, answer ids + eot); check_task_lengths
batches   encode_records, pad_batch: right-padded records, targets on the answer tokens only
scoring   greedy_answers, accuracy (exact match), metrics (OP, BWT of the accuracy matrix R)
command   `python tasks.py --write_tasks=DIR [--seed=N]` writes the builtin tasks as a TRACE folder

Every builtin prompt opens with its task's instruction word and ends with "A: "; answers have no
leading space. They stay short (prompts <= 80 ASCII characters, answers <= 8: the CPU model reads
bytes) and easy (the default `python train.py` model learns each to >= 0.6 exact match in 200
fine-tuning steps at lr 1e-3).
"""

import difflib
import json
import os
import random
import shutil
from pathlib import Path

import torch

from plumbing import DataError, cli

# the words the generators draw from
POSITIVE = tuple(
    "good great tasty fresh lovely friendly superb pleasant excellent charming delightful "
    "wonderful".split()
)
NEGATIVE = tuple(
    "bad awful bland cold rude dirty boring stale noisy terrible dreadful horrible".split()
)
REVIEWED = tuple(
    "soup service movie room staff book pizza hotel coffee show bread music waiter film garden "
    "concert salad train lesson album".split()
)
PEOPLE = tuple(
    "Ann Bob Carla Dev Eve Femi Gus Hana Ivan Jin Kofi Lea Mona Nils Omar Pia Raj Sara Tom Uma "
    "Vera Wes Yuki Zoe".split()
)
THINGS = tuple(
    "apples pens stamps coins books eggs cards shells marbles cookies stickers plums".split()
)
CITIES = tuple(
    "Oslo Lima Paris Rome Cairo Tokyo Berlin Madrid Dublin Vienna Quito Delhi Seoul Athens Nairobi "
    "Lisbon Hanoi Accra Bogota Havana".split()
)
# English -> made-up words, fixed for every seed: the cipher task learns this dictionary
CIPHER = dict(
    pair.split(":")
    for pair in (
        "sun:vuz moon:dov star:kab tree:fuv rock:vil fish:vak bird:neb cat:zop dog:pag king:rud "
        "red:vis blue:vus green:dol big:div small:miz old:tav new:gid hot:buk cold:zin water:zep "
        "fire:ruz wind:sig rain:rok house:lud road:dus boat:ped door:rik book:tem milk:nef "
        "bread:rez salt:zub gold:geb ship:sif horse:sur child:kim night:pok day:fob food:fom "
        "snow:tod hill:nev"
    ).split()
)


# ----------------------------------------------------------------------------- the builtin tasks


def _sentiment(rng):
    """Label of a templated review; a "not" flips the adjective's polarity (classification)."""
    noun = rng.choice(REVIEWED)
    positive = rng.random() < 0.5
    adj, adj2 = rng.sample(POSITIVE if positive else NEGATIVE, 2)
    form = rng.choice(("plain", "not", "and"))
    review = {
        "plain": f"the {noun} was {adj}.",
        "not": f"the {noun} was not {adj}.",
        "and": f"the {noun} was {adj} and {adj2}.",
    }[form]
    label = "positive" if positive != (form == "not") else "negative"
    return f"Review: {review} Sentiment? A: ", label


def _arithmetic(rng):
    """A one-step word problem: the sum of two numbers below 10."""
    name = rng.choice(PEOPLE)
    things = rng.choice(THINGS)
    a = rng.randint(1, 9)
    b = rng.randint(1, 9)
    return f"Math: {name} has {a} {things} and gets {b} more. How many? A: ", str(a + b)


def _python(rng):
    """The value a two-statement snippet prints: a sum or a non-negative difference of two numbers
    below 10 (code)."""
    v = rng.choice("abcmnpxyz")
    op = rng.choice("+-")
    n1 = rng.randint(1, 9)
    n2 = rng.randint(1, 9)
    if op == "-":
        n1, n2 = max(n1, n2), min(n1, n2)
    value = n1 + n2 if op == "+" else n1 - n2
    return f"Python: {v} = {n1}; print({v} {op} {n2}) Output? A: ", str(value)


def _cipher(rng):
    """Word-by-word translation of one or two English words into the CIPHER language (rewriting)."""
    words = rng.sample(sorted(CIPHER), 1 if rng.random() < 0.1 else 2)  # 1560 pairs, 40 singles
    return f"Translate: {' '.join(words)} A: ", " ".join(CIPHER[w] for w in words)


def _extract(rng):
    """The name or the city of a record: name and city in random order, then an age (extraction)."""
    values = {"name": rng.choice(PEOPLE), "city": rng.choice(CITIES)}
    keys = rng.sample(sorted(values), 2)
    record = "; ".join(f"{k}={values[k]}" for k in keys)
    asked = rng.choice(keys)
    return f"Record: {record}; age={rng.randint(18, 89)}. {asked}? A: ", values[asked]


def _reverse(rng):
    """Three digits, reversed."""
    s = "".join(rng.choice("0123456789") for _ in range(3))
    return f"Reverse: {s} A: ", s[::-1]


TASK_GENERATORS = {  # name -> draw(rng) -> (prompt, answer), in the builtin order
    "sentiment": _sentiment,
    "arithmetic": _arithmetic,
    "python": _python,
    "cipher": _cipher,
    "extract": _extract,
    "reverse": _reverse,
}
BUILTIN_TASKS = tuple(TASK_GENERATORS)  # the builtin order


def _sample_task(name, draw, rng, n_train, n_test):
    """n_test distinct test prompts first, then n_train draws whose prompt is not among them (train
    may repeat: cipher has fewer distinct prompts than train records)."""
    train = []
    test = []
    test_prompts = set()
    for _ in range(20 * (n_train + n_test)):  # a bound: too small a prompt space fails, not hangs
        prompt, answer = draw(rng)
        if len(test) < n_test:
            if prompt not in test_prompts:
                test_prompts.add(prompt)
                test.append({"prompt": prompt, "answer": answer})
        elif prompt not in test_prompts:
            train.append({"prompt": prompt, "answer": answer})
            if len(train) == n_train:
                return train, test
    raise DataError(
        f"the builtin task {name} has too few distinct prompts for {n_test} test and {n_train} "
        "train records; ask for fewer"
    )


def builtin_tasks(
    seed: int = 0, n_train: int = 2000, n_test: int = 200
) -> list[tuple[str, list[dict], list[dict]]]:
    """[(name, train, test), ...] in the builtin order; task k draws from Random(seed + k) only."""
    if n_train < 1 or n_test < 1:
        raise DataError(
            f"a task needs train and test records (got n_train={n_train}, n_test={n_test})"
        )
    return [
        (name, *_sample_task(name, TASK_GENERATORS[name], random.Random(seed + k), n_train, n_test))
        for k, name in enumerate(BUILTIN_TASKS)
    ]


# ----------------------------------------------------------------------------- TRACE folders


# a damaged file of a suite tasks.py wrote (a cut copy, say): how to write it again
REWRITE = " (a suite tasks.py wrote: delete it and run python tasks.py --write_tasks=DIR again)"


def _read_records(path):
    """One task file -> [{"prompt", "answer"}]: a JSON list (.json) or an object a line (.jsonl)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 JSON{REWRITE}") from None
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} line {e.lineno}: not valid JSON ({e.msg}); fix the file or write it as "
                'a JSON list of {"prompt", "answer"} objects' + REWRITE
            ) from None
        if not isinstance(items, list):
            raise DataError(
                f"{path} is not a JSON list; a .json task file holds a list of "
                '{"prompt", "answer"} objects'
            )
        where = [f"record {i} (0-based)" for i in range(len(items))]
    else:
        items = []
        where = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue  # blank lines (a trailing newline, say) are not records
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path} line {lineno}: not valid JSON ({e.msg}); a .jsonl file holds one "
                    '{"prompt", "answer"} object per line' + REWRITE
                ) from None
            where.append(f"record {len(where)} (0-based, line {lineno})")
    for item, place in zip(items, where):
        for key in ("prompt", "answer"):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise DataError(
                    f'{path}: {place} has no string "{key}"; every record is '
                    '{"prompt": str, "answer": str}'
                )
        if not item[
            "answer"
        ].strip():  # an empty answer would be scored as right whatever the model says
            raise DataError(
                f'{path}: {place} has an empty "answer" ({item["answer"]!r}); give it the expected '
                "output or remove the record"
            )
    if not items:
        raise DataError(
            f"{path} has no records; every task needs at least one train and one test record"
        )
    return [{"prompt": item["prompt"], "answer": item["answer"]} for item in items]  # no other keys


def _task_file(folder, split):
    found = [
        folder / f"{split}{ext}"
        for ext in (".json", ".jsonl")
        if (folder / f"{split}{ext}").is_file()
    ]
    if not found:
        raise DataError(
            f"{folder} has no {split}.json or {split}.jsonl; a task folder holds both a train and "
            "a test file"
        )
    if len(found) > 1:
        raise DataError(f"{folder} has both {split}.json and {split}.jsonl; keep one")
    return found[0]


def _pick_order(tasks, order, where):
    """tasks reordered (and possibly narrowed) to the names in order."""
    by_name = {name: (name, train, test) for name, train, test in tasks}
    for name in order:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            raise DataError(
                f"task order names {name!r}, which is not a task in {where} (tasks: "
                f"{', '.join(by_name)})" + (f"; did you mean {close[0]}?" if close else "")
            )
    if len(set(order)) < len(order):
        twice = sorted({name for name in order if order.count(name) > 1})
        raise DataError(f"task order lists {', '.join(twice)} more than once; name each task once")
    return [by_name[name] for name in order]


def load_tasks(
    spec: str, order: list[str] | None = None, seed: int = 0
) -> list[tuple[str, list[dict], list[dict]]]:
    """'builtin' -> builtin_tasks(seed); else a TRACE folder, DIR/<task>/{train,test}.json[l].
    Order: `order` when given (a subset is fine), else the builtin order / by folder name."""
    if spec == "builtin":
        tasks = builtin_tasks(seed)
    else:
        root = Path(spec)
        if not root.is_dir():
            raise DataError(
                f"--tasks={spec}: no such folder; pass --tasks=builtin or a folder with one "
                "sub-folder per task holding train.json and test.json"
            )
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(
                f"--tasks={spec} has no task sub-folders; expected {spec}/<task>/train.json and "
                "test.json (python tasks.py --write_tasks=DIR writes an example)"
            )
        tasks = [
            (f.name, _read_records(_task_file(f, "train")), _read_records(_task_file(f, "test")))
            for f in folders
        ]
    return _pick_order(tasks, order, spec) if order else tasks


def write_tasks(tasks, folder) -> None:
    """[(name, train, test)] -> folder/<name>/{train,test}.json, JSON that load_tasks reads back.
    Written whole under a temporary name, then renamed into place: a killed write leaves no half
    suite or half file that could pass for a finished one."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, train, test in tasks:
            (tmp / name).mkdir(parents=True)
            for split, records in (("train", train), ("test", test)):
                with open(tmp / name / f"{split}.json", "w", encoding="utf-8") as f:
                    json.dump(records, f, indent=1, ensure_ascii=False)
                    f.write("\n")
        if not folder.exists():
            os.replace(tmp, folder)  # the whole suite appears at once
            return
        for name, _, _ in tasks:  # into a folder that exists: task by task, each one whole
            shutil.rmtree(folder / name, ignore_errors=True)
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encode_record(tok, record) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + [eot]). The answer is encoded on its own, so the split is exact (a
    BPE could merge across it); the eot teaches the model where the answer stops."""
    return tok.encode(record["prompt"]), tok.encode(record["answer"]) + [tok.eot]


def check_task_lengths(tasks, tok, block_size: int) -> None:
    """DataError naming the first record (task, split, index) whose input, prompt + answer tokens
    (the end token is only a target), is longer than block_size, and the block every record fits."""
    lengths = {}  # (task, split) -> each record's input length
    for name, train, test in tasks:
        for split, records in (("train", train), ("test", test)):
            prompts = tok.encode_batch([r["prompt"] for r in records])
            answers = tok.encode_batch([r["answer"] for r in records])
            lengths[name, split] = [len(p) + len(a) for p, a in zip(prompts, answers)]
    need = max((n for ns in lengths.values() for n in ns), default=0)
    for (name, split), ns in lengths.items():
        for i, n in enumerate(ns):
            if n > block_size:
                raise DataError(
                    f"task {name}: {split} record {i} is {n} tokens (prompt + answer), longer than "
                    f"--block_size={block_size}; pass --block_size={need} or more (the longest "
                    "record), or shorten the prompts"
                )


# ---------------------------------------------------------------------- records as batches, scoring


def encode_records(tok, records):
    """Records -> {"prompt": ids, "answer": ids + [eot], "text": the answer string}."""
    return [
        dict(zip(("prompt", "answer"), encode_record(tok, r)), text=r["answer"]) for r in records
    ]


def input_length(record):
    """Tokens the model reads for a record: prompt + answer (the end token is only a target)."""
    return len(record["prompt"]) + len(record["answer"]) - 1


def pad_batch(pairs, pad, device, tail=0):
    """[(prompt ids, answer ids + eot)] -> x, y (B, L), right-padded; y is -1 except at the answer
    tokens, so the LM loss covers the answer and its end token only. tail: pad columns after the
    longest record (seekr.pad_tail)."""
    L = max(len(p) + len(a) for p, a in pairs) - 1 + tail
    x = torch.full((len(pairs), L), pad, dtype=torch.long)
    y = torch.full((len(pairs), L), -1, dtype=torch.long)
    for b, (p, a) in enumerate(pairs):
        seq = torch.tensor(p + a)
        x[b, : len(seq) - 1] = seq[:-1]
        y[b, len(p) - 1 : len(seq) - 1] = seq[len(p) :]
    return x.to(device), y.to(device)


def metrics(R):
    """OP = mean_i R[T][i]; BWT = mean over i < T of R[T][i] - R[i][i] (TRACE); BWT_over_T divides
    that sum by T (SEEKR's official script). R[t][i]: accuracy on task i after task t."""
    T = len(R)
    drop = sum(R[-1][i] - R[i][i] for i in range(T - 1))
    return {"OP": sum(R[-1]) / T, "BWT": drop / (T - 1) if T > 1 else 0.0, "BWT_over_T": drop / T}


@torch.no_grad()
def greedy_answers(model, tok, prompts, max_new, device, autocast, tail=0, batch_size=64):
    """Greedy decoding of every prompt (token lists) until its end token or max_new tokens ->
    answer strings. Prompts share a right-padded buffer; row b reads its logits at its own last
    position. tail: pad columns the model always gets after a record (seekr.pad_tail)."""
    out = []
    limit = model.config.block_size
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s : s + batch_size]
        lens = torch.tensor([len(p) for p in chunk])
        width = min(int(lens.max()) + max_new + tail, limit)
        buf = torch.full((len(chunk), width), tok.eot, dtype=torch.long)
        for b, p in enumerate(chunk):
            buf[b, : len(p)] = torch.tensor(p)
        buf = buf.to(device)
        pos = lens.clone().to(device)
        rows = torch.arange(len(chunk), device=device)
        done = pos >= buf.size(1)
        for _ in range(max_new):
            with autocast:
                logits = model(buf[:, : min(int(pos.max()) + tail, buf.size(1))])[0]
            logits = logits[rows, pos - 1, : tok.n_vocab]  # each row's last position (B, n_vocab)
            nxt = torch.where(done, tok.eot, logits.argmax(-1))
            buf[rows[~done], pos[~done]] = nxt[~done]
            done = done | (nxt == tok.eot) | (pos + 1 >= buf.size(1) - tail)
            pos = torch.where(nxt == tok.eot, pos, pos + 1)
            if done.all():
                break
        for b in range(len(chunk)):
            ids = buf[b, lens[b] : pos[b]].tolist()
            out.append(tok.decode(ids[: ids.index(tok.eot)] if tok.eot in ids else ids))
    return out


def accuracy(model, tok, test, device, autocast, tail=0):
    """Exact match (whitespace stripped) of greedy answers on encoded test records."""
    model.eval()
    max_new = max(len(r["answer"]) for r in test)
    prompts = [r["prompt"] for r in test]
    got = greedy_answers(model, tok, prompts, max_new, device, autocast, tail)
    model.train()
    return sum(g.strip() == r["text"].strip() for g, r in zip(got, test)) / len(test)


# ----------------------------------------------------------------------------- command line

USAGE = "usage: python tasks.py --write_tasks=DIR [--seed=N]"


def main(argv):
    """python tasks.py --write_tasks=DIR [--seed=N]: the builtin tasks as a TRACE folder."""
    write_suite(argv, builtin_tasks, "write_tasks", USAGE, "builtin")


def write_suite(argv, make, flag, usage, what):
    """The command that writes a suite, make(seed) -> tasks, to --<flag>=DIR in TRACE's layout,
    one printed line per task (this file's, and tests/heldout_tasks.py's)."""
    if "-h" in argv or "--help" in argv:
        print(usage + f"  (writes the {what} tasks to DIR/<task>/{{train,test}}.json)")
        return
    flags = {}
    for arg in argv:
        key, eq, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq or key not in (flag, "seed"):
            raise DataError(f"unexpected argument {arg!r}; {usage}")
        flags[key] = value
    if not flags.get(flag):
        raise DataError(f"--{flag}=DIR is required; {usage}")
    try:
        seed = int(flags.get("seed", "0"))
    except ValueError:
        raise DataError(f"--seed={flags['seed']} is not an integer; {usage}") from None
    tasks = make(seed)
    write_tasks(tasks, flags[flag])
    for name, train, test in tasks:
        print(
            f"{flags[flag]}/{name}: {len(train)} train, {len(test)} test, e.g. "
            f"{test[0]['prompt']!r} -> {test[0]['answer']!r}"
        )


if __name__ == "__main__":
    cli(main)

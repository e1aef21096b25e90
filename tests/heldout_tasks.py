"""A held-out continual-learning suite (issue 27): four tasks nobody tunes on, in TRACE's layout.

Written before any default was chosen, to check that the defaults picked on the builtin suite
(tasks.py) transfer. New generators, other skills than the builtin six:

count   how many words a short list holds (1-6)                   counting
sort    three digits in ascending order                           ordering
plural  the plural of a made-up noun (-es after s/x/z/ch/sh, -ies after a consonant + y, else -s)
upper   a made-up word in capitals                                character mapping

Same conventions as the builtin tasks: every prompt opens with its task's instruction word and
ends with "A: "; answers have no leading space; prompts <= 80 ASCII characters, answers <= 8;
2,000 train and 200 test records per task, task k drawn from Random(seed + k), no test prompt in
train (tasks._sample_task). It is a test-side helper (not a top-level module).

command   `python tests/heldout_tasks.py --out=DIR [--seed=N]` writes DIR/<task>/{train,test}.json
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's modules

from plumbing import cli  # noqa: E402
from tasks import _sample_task, write_suite  # noqa: E402

# the words and syllables the generators draw from
ITEMS = tuple("cup pen hat key map box jar fan bag pot mug egg ink net rug toy".split())
ONSETS = tuple("b d f g k l m n p r t v".split())
VOWELS = tuple("aeiou")
CONSONANTS = "bcdfghjklmnpqrstvwxz"
# a made-up noun's ending -> its plural suffix (the y rule needs a consonant before it)
ENDINGS = {
    "s": "es",
    "x": "es",
    "z": "es",
    "ch": "es",
    "sh": "es",
    "y": "ies",
    "b": "s",
    "d": "s",
    "g": "s",
    "k": "s",
    "m": "s",
    "n": "s",
    "p": "s",
    "t": "s",
}


def _count(rng):
    """How many words a list of 1-6 words holds (a word may repeat)."""
    words = [rng.choice(ITEMS) for _ in range(rng.randint(1, 6))]
    return f"Count: {' '.join(words)} A: ", str(len(words))


def _sort(rng):
    """Three digits, ascending."""
    s = "".join(rng.choice("0123456789") for _ in range(3))
    return f"Sort: {s} A: ", "".join(sorted(s))


def _made_up_stem(rng):
    """onset + vowel (+ onset + vowel, one time in three): a pronounceable non-word."""
    syllables = 2 if rng.random() < 1 / 3 else 1
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables))


def _plural(rng):
    """The plural of a made-up noun: stem + ending, the ending decides the suffix (y -> ies)."""
    stem = _made_up_stem(rng)
    ending = rng.choice(sorted(ENDINGS))
    if ending == "y":
        stem += rng.choice(CONSONANTS)  # consonant + y: the y becomes ies
        return f"Plural: {stem}y A: ", f"{stem}{ENDINGS['y']}"
    return f"Plural: {stem}{ending} A: ", f"{stem}{ending}{ENDINGS[ending]}"


def _upper(rng):
    """A made-up word of 3-5 lowercase letters, in capitals."""
    word = _made_up_stem(rng) + rng.choice(CONSONANTS)
    return f"Upper: {word} A: ", word.upper()


HELDOUT_GENERATORS = {  # name -> draw(rng) -> (prompt, answer), in the suite's order
    "count": _count,
    "sort": _sort,
    "plural": _plural,
    "upper": _upper,
}


def heldout_tasks(seed=0, n_train=2000, n_test=200):
    """[(name, train, test), ...] in HELDOUT_GENERATORS' order; task k draws from
    Random(seed + k) only, like tasks.builtin_tasks."""
    return [
        (name, *_sample_task(name, draw, random.Random(seed + k), n_train, n_test))
        for k, (name, draw) in enumerate(HELDOUT_GENERATORS.items())
    ]


USAGE = "usage: python tests/heldout_tasks.py --out=DIR [--seed=N]"


def main(argv):
    """Writes the held-out suite to DIR in TRACE's layout, one printed line per task."""
    write_suite(argv, heldout_tasks, "out", USAGE, "held-out")


if __name__ == "__main__":
    cli(main)

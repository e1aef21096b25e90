"""Shared test setup: import the top-level modules, use the GPT-2 ranks cache beside the repo, no
network.

A test that needs the GPT-2 BPE ranks carries @pytest.mark.requires_gpt2: it is skipped, with the
reason, when data.get_tokenizer("gpt2") cannot load them (no cache at TIKTOKEN_CACHE_DIR and no
network), checked once a session.
"""

import functools
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_gpt2: needs the GPT-2 BPE ranks (skipped when they cannot load)"
    )


@functools.cache
def gpt2_missing():
    """None when the GPT-2 ranks load, else why not (the DataError's one line)."""
    import data

    try:
        data.get_tokenizer("gpt2")
    except data.DataError as e:
        return f"needs the GPT-2 BPE ranks: {e}"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("requires_gpt2") and gpt2_missing():
            item.add_marker(pytest.mark.skip(reason=gpt2_missing()))

"""Shared test settings: one thread, a private cache, and the corpus
mirror when the machine has one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property tests: no per-example deadline (a loaded 2-core CI machine makes timings flaky). Loaded
# here, before the test modules are imported, so every @settings(...) inherits it.
settings.register_profile("seqlab", deadline=None)
settings.load_profile("seqlab")


def pytest_configure(config):
    """One intra-op thread: the suite's models are tiny, and on a 2-core machine two threads per
    process mostly wait on each other (the suite runs about 3x faster so)."""
    import torch

    torch.set_num_threads(1)


def corpus_mirror() -> Path | None:
    """The local corpus mirror: $SEQLAB_CORPUS_MIRROR, else ../shared/corpora beside the repo."""
    env = os.environ.get("SEQLAB_CORPUS_MIRROR")
    for candidate in (env, REPO.parent / "shared" / "corpora"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test run gets its own SEQLAB_CACHE; the mirror stays as configured."""
    cache = tmp_path_factory.mktemp("seqlab-cache")
    old = os.environ.get("SEQLAB_CACHE")
    os.environ["SEQLAB_CACHE"] = str(cache)
    mirror = corpus_mirror()
    if mirror is not None:
        os.environ.setdefault("SEQLAB_CORPUS_MIRROR", str(mirror))
    yield cache
    if old is None:
        os.environ.pop("SEQLAB_CACHE", None)
    else:
        os.environ["SEQLAB_CACHE"] = old


def pytest_collection_modifyitems(config, items):
    if corpus_mirror() is not None:
        return
    skip = pytest.mark.skip(reason="no corpus mirror (set SEQLAB_CORPUS_MIRROR)")
    for item in items:
        if "corpus" in item.keywords:
            item.add_marker(skip)


# A tiny trained `reverse` run shared by the CLI, plotting and README tests: checkpoints at steps
# 2, 4 and 6 plus best.pt, trained once per session.
TINY_REVERSE = [
    "data.synthetic_size=300",
    "train.max_steps=6",
    "train.valid_every=2",
    "train.valid_max_sentences=10",
    "train.device='cpu'",
    "train.max_tokens=300",
    "model.hidden_size=16",
    "model.embed_dim=8",
]


@pytest.fixture(scope="session")
def reverse_run_dir(tmp_path_factory) -> Path:
    from seqlab.config import load_recipe
    from seqlab.run import train_recipe

    run_dir = tmp_path_factory.mktemp("tiny") / "reverse"
    train_recipe(load_recipe(REPO / "recipes" / "reverse.toml", TINY_REVERSE), run_dir)
    return run_dir


def run_cli(args, capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    """`seqlab ARGS` in process with `stdin` fed in: (exit code, stdout, stderr)."""
    import io
    import sys

    from seqlab.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

"""Shared test settings: a private cache, and the corpus mirror when the machine has one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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

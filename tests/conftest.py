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


# A tiny Transformer trained on `reverse` (about 5 s), shared by the export, engine and serving
# tests: trained enough that most outputs end with <eos> well before the output cap, and decoded
# with the `average` length penalty, which CTranslate2 shares.
TINY_TRANSFORMER = """
name = "tiny-transformer"
task = "translation"
seed = 1

[data]
corpus = "synthetic"
synthetic_task = "reverse"
synthetic_size = 2000
synthetic_symbols = 12
tokenizer = "word"
min_freq = 1
max_len = 12

[model]
kind = "transformer"
d_model = 32
num_heads = 2
num_encoder_layers = 2
num_decoder_layers = 2
d_ff = 64
dropout = 0.0
max_len = 24
share_embeddings = true
tie_output = true

[train]
max_steps = 150
max_tokens = 1500
lr = 3e-3
schedule = "cosine"
warmup_steps = 20
label_smoothing = 0.0
valid_every = 150
valid_max_sentences = 20
device = "cpu"

[decode]
beam_size = 4
valid_beam_size = 1
length_penalty = 1.0
length_penalty_kind = "average"
max_len_a = 1.5
max_len_b = 5
"""


@pytest.fixture(scope="session")
def transformer_checkpoint(tmp_path_factory) -> Path:
    """best.pt of a tiny trained Transformer (`TINY_TRANSFORMER`)."""
    from seqlab.config import load_recipe
    from seqlab.run import train_recipe

    folder = tmp_path_factory.mktemp("tiny-transformer")
    recipe_path = folder / "tiny-transformer.toml"
    recipe_path.write_text(TINY_TRANSFORMER)
    train_recipe(load_recipe(recipe_path), folder / "run")
    return folder / "run" / "best.pt"

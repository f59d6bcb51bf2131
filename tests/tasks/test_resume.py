"""Masked-LM and classification runs stopped after K steps and resumed end exactly where an
uninterrupted run ends: same parameters, same logged losses (the translation case is in
tests/test_train.py)."""

from __future__ import annotations

import random

import datasets
import pytest
import torch

from seqlab.config import load_recipe
from seqlab.data.tokenize import WhitespaceTokenizer
from seqlab.data.vocab import Side, Vocab
from seqlab.tasks.classification import ClassificationTask, PreparedClassification
from seqlab.tasks.masked_lm import MaskedLMTask
from seqlab.tasks.masked_lm_data import PreparedMaskedLM
from seqlab.train import Trainer, seed_everything

VOCAB = Vocab.build({w: 1 for w in ["good", "bad", *(f"w{i}" for i in range(20))]})
TRAIN = """max_steps = 9
batch_size = 8
lr = 3e-3
warmup_steps = 2
log_every = 1
valid_every = 4
device = 'cpu'
"""
MODEL = """[model]
kind = "bert"
d_model = 16
num_heads = 2
num_layers = 1
d_ff = 32
dropout = 0.2
max_len = 16
"""


def _recipe(tmp_path, task: str):
    path = tmp_path / f"{task}.toml"
    data = "tokenizer = 'whitespace'\n" if task == "masked_lm" else ""
    path.write_text(f'task = "{task}"\nseed = 3\n[data]\n{data}{MODEL}[train]\n{TRAIN}')
    return load_recipe(path)


def _labelled(n: int, seed: int) -> datasets.Dataset:
    rng = random.Random(seed)
    rows = {"ids": [], "label": []}
    for _ in range(n):
        label = rng.randrange(2)
        words = [VOCAB.token_to_id(f"w{rng.randrange(20)}") for _ in range(rng.randrange(2, 8))]
        words.insert(rng.randrange(len(words) + 1), VOCAB.token_to_id("good" if label else "bad"))
        rows["ids"].append(words)
        rows["label"].append(label)
    return datasets.Dataset.from_dict(rows)


def _pairs(n: int, seed: int) -> datasets.Dataset:
    """Packed <cls> A <sep> B <sep> rows, as the masked-LM data stage writes them."""
    rng = random.Random(seed)
    rows = {"ids": [], "segments": [], "is_next": []}
    for _ in range(n):
        a, b = ([rng.randrange(7, len(VOCAB)) for _ in range(rng.randrange(1, 6))] for _ in "ab")
        rows["ids"].append([VOCAB.cls_id, *a, VOCAB.sep_id, *b, VOCAB.sep_id])
        rows["segments"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
        rows["is_next"].append(rng.random() < 0.5)
    return datasets.Dataset.from_dict(rows)


def _classification(recipe):
    splits = {"train": _labelled(40, 0), "valid": _labelled(16, 1)}
    task = ClassificationTask(
        recipe, PreparedClassification(Side(WhitespaceTokenizer(), VOCAB), splits, None)
    )
    return task, "accuracy", True


def _masked_lm(recipe):
    splits = {"train": _pairs(40, 0), "valid": _pairs(16, 1)}
    task = MaskedLMTask(recipe, PreparedMaskedLM(Side(WhitespaceTokenizer(), VOCAB), splits))
    return task, "mlm_loss", False


def _run(make, recipe, run_dir, *, stop_at: int | None = None, resume: bool = False) -> Trainer:
    seed_everything(recipe.seed)
    task, metric, higher = make(recipe)

    def stop(step: int) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    trainer = Trainer(
        task, recipe, run_dir, metric_key=metric, higher_is_better=higher, on_step=stop
    )
    if resume:
        trainer.resume()
    trainer.fit()
    return trainer


def _steps(trainer: Trainer) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in trainer.progress.history if "loss" in r}


@pytest.mark.parametrize("task", ["classification", "masked_lm"])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(task, tmp_path):
    make = _classification if task == "classification" else _masked_lm
    recipe = _recipe(tmp_path, task)
    straight = _run(make, recipe, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):  # mid-epoch (5 batches an epoch), after a validation
        _run(make, recipe, tmp_path / "resumed", stop_at=6)
    resumed = _run(make, recipe, tmp_path / "resumed", resume=True)
    assert resumed.progress.step == straight.progress.step == 9
    assert _steps(resumed) == _steps(straight) and sorted(_steps(straight)) == list(range(1, 10))
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    seed_everything(recipe.seed)
    start = make(recipe)[0].model.parameters()  # the runs really trained: the weights moved
    assert not all(torch.equal(p, q) for p, q in zip(start, straight.model.parameters()))

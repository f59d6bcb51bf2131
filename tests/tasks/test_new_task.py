"""A task defined here, outside the package, trains through the normal entry point.

This is the "add a task" recipe of docs/architecture.md, as a test: a data config, a
`TrainingTask`, a `TaskSpec` and `register_task`; nothing under seqlab/ changes. The task: copy a
random symbol sequence (ids 4.. of a vocabulary with the four special tokens first).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
from torch import Tensor, nn

from seqlab.config import load_recipe
from seqlab.data.batch import Batch, collate
from seqlab.distributed import ShardResult
from seqlab.errors import ConfigError
from seqlab.losses import token_cross_entropy
from seqlab.models import build_model
from seqlab.run import train_recipe
from seqlab.tasks import TASKS, TaskSpec, TrainingTask, register_task


@dataclass(frozen=True)
class CopyData:
    """`[data]` of the copy task."""

    size: int = 400  # training pairs
    symbols: int = 6
    max_len: int = 6


@dataclass
class CopyPairs:
    train: list[tuple[list[int], list[int]]]
    valid: list[tuple[list[int], list[int]]]

    def summary(self) -> str:
        return f"copy: {len(self.train)} training pairs, {len(self.valid)} validation pairs"


def prepare_copy(recipe) -> CopyPairs:
    rng, d = random.Random(recipe.seed), recipe.data

    def pair() -> tuple[list[int], list[int]]:
        ids = [rng.randrange(4, 4 + d.symbols) for _ in range(rng.randint(1, d.max_len))]
        return ids, list(ids)

    return CopyPairs([pair() for _ in range(d.size)], [pair() for _ in range(50)])


class CopyTask(TrainingTask):
    def __init__(self, recipe, data: CopyPairs, *, rank: int = 0, world: int = 1):
        self.recipe, self.data = recipe, data
        vocab = 4 + recipe.data.symbols
        self.model = build_model(recipe.model, vocab, vocab)

    def batches(self, epoch: int, skip: int):
        order = list(range(len(self.data.train)))
        random.Random(epoch).shuffle(order)
        size = self.recipe.train.batch_size
        chunks = [order[i : i + size] for i in range(0, len(order), size)]
        for chunk in chunks[skip:]:
            yield collate([self.data.train[i] for i in chunk])

    def _nll(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (B, T, V)
        mask = batch.tgt_mask.flatten()  # (B*T,)
        return token_cross_entropy(logits.flatten(0, 1)[mask], batch.tgt_out.flatten()[mask])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        return self._nll(model, batch).sum(), batch.num_tokens

    def validation_part(self, model: nn.Module, rank: int, world: int) -> ShardResult:
        batch = collate(self.data.valid)
        nll = self._nll(model, batch)
        return ShardResult({"nll": nll.sum().item(), "tokens": float(nll.numel())})

    def validation_metrics(self, whole: ShardResult) -> dict[str, float]:
        return {"loss": whole.sums["nll"] / whole.sums["tokens"]}

    def checkpoint_extras(self) -> dict:
        return {"symbols": self.recipe.data.symbols}


SPEC = TaskSpec(
    name="copy",
    data_config=CopyData,
    prepare=prepare_copy,
    build=CopyTask,
    metrics={"loss": False},
    ignores=("decode", "train.label_smoothing"),
)

RECIPE = """
name = "copy"
task = "copy"
[data]
size = 400
[model]
kind = "rnn_seq2seq"
cell = "gru"
embed_dim = 16
hidden_size = 32
attention = true
[train]
max_steps = 40
batch_size = 20
max_tokens = 1000
lr = 0.01
warmup_steps = 0
valid_every = 20
log_every = 10
device = "cpu"
"""


@pytest.fixture(scope="module", autouse=True)
def copy_task():
    register_task(SPEC)
    yield
    TASKS._specs.pop("copy", None)


def test_a_task_registered_outside_the_package_trains_and_resumes(tmp_path):
    path = tmp_path / "copy.toml"
    path.write_text(RECIPE)
    recipe = load_recipe(path)
    summary = train_recipe(recipe, tmp_path / "run")
    assert summary["step"] == 40 and "test" not in summary
    records = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    losses = [r["valid_loss"] for r in records if "valid_loss" in r]
    assert len(losses) == 2 and losses[-1] < losses[0] < 2.5  # it learns
    longer = load_recipe(path, ["train.max_steps=60"])
    assert train_recipe(longer, tmp_path / "run", resume=True)["step"] == 60


def test_the_spec_refuses_keys_and_metrics_its_task_ignores(tmp_path):
    path = tmp_path / "copy.toml"
    path.write_text(RECIPE + "\n[decode]\nbeam_size = 3\n")
    with pytest.raises(ConfigError, match=r"\[decode\] is not used by task 'copy'"):
        load_recipe(path)
    path.write_text(RECIPE)
    with pytest.raises(ConfigError, match=r"train.label_smoothing is not used by task 'copy'"):
        load_recipe(path, ["train.label_smoothing=0.2"])
    with pytest.raises(ConfigError, match=r"train.metric = 'bleu': task 'copy' selects .* 'loss'"):
        load_recipe(path, ["train.metric='bleu'"])
    with pytest.raises(ConfigError, match=r"unknown key 'data\.sizes'"):
        load_recipe(path, ["data.sizes=3"])

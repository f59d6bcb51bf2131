"""The training loop: exact resumption, Ctrl-C, non-finite losses, accumulation, early stopping."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from seqlab.config import load_recipe
from seqlab.distributed import ShardResult
from seqlab.run import train_recipe
from seqlab.train import Trainer, TrainingError, TrainingTask

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.synthetic_size=300",
    "model.embed_dim=16",
    "model.hidden_size=16",
    "train.max_tokens=300",
    "train.log_every=1",
    "train.valid_every=4",
    "train.valid_max_sentences=20",
    "train.warmup_steps=2",
    "model.dropout=0.2",
]


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_resume_after_interrupt_logs_the_same_losses(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY, "train.max_steps=10"])
    train_recipe(recipe, tmp_path / "straight")

    def interrupt(step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_recipe(recipe, tmp_path / "resumed", on_step=interrupt)
    assert (tmp_path / "resumed" / "last.pt").exists()
    train_recipe(recipe, tmp_path / "resumed", resume=True)
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(straight) == list(range(1, 11))
    assert resumed == straight  # exactly, step by step, across the interruption


def test_existing_run_needs_resume(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY, "train.max_steps=2"])
    summary = train_recipe(recipe, tmp_path / "run")
    assert (tmp_path / "run" / "best.pt").exists() and "test" in summary
    with pytest.raises(TrainingError, match="--resume"):
        train_recipe(recipe, tmp_path / "run")


def test_resuming_a_finished_run_trains_no_further_step(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY, "train.max_steps=4"])
    run = tmp_path / "run"
    train_recipe(recipe, run)
    log = (run / "log.jsonl").read_text()
    best = (run / "best.pt").read_bytes()
    summary = train_recipe(recipe, run, resume=True)  # e.g. after a kill while scoring
    assert summary["step"] == 4 and "test" in summary
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == ["checkpoint_4.pt"]
    assert (run / "log.jsonl").read_text() == log
    assert (run / "best.pt").read_bytes() == best


def test_a_run_stopped_before_its_last_validation_only_validates_on_resume(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY, "train.max_steps=6"])
    run = tmp_path / "run"

    def interrupt(step: int) -> None:
        if step == 6:  # after the last step, before its validation
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_recipe(recipe, run, on_step=interrupt)
    summary = train_recipe(recipe, run, resume=True)
    assert summary["step"] == 6 and "test" in summary
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "valid_loss" in r] == [4, 6]
    assert max(r["step"] for r in records) == 6


def test_max_epochs_ends_with_a_validated_best_checkpoint(tmp_path):
    overrides = [*TINY, "train.max_steps=1000", "train.max_epochs=1", "train.valid_every=1000"]
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", overrides)
    summary = train_recipe(recipe, tmp_path / "run")
    assert 0 < summary["step"] < 1000 and "test" in summary
    assert (tmp_path / "run" / "best.pt").exists()


# -- the loop on a fake task: a linear regression whose batches are plain tensors --------------


@dataclass(frozen=True)
class FakeBatch:
    x: torch.Tensor  # (B, 4)
    y: torch.Tensor  # (B,)

    @property
    def num_tokens(self) -> int:
        return self.x.size(0)

    def to(self, device):
        return self


class FakeTask(TrainingTask):
    def __init__(self, batches: list[FakeBatch], nan_at: int | None = None, metrics=None):
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.data, self.nan_at, self.calls = batches, nan_at, 0
        self.metrics = iter(metrics or [])

    def batches(self, epoch, skip):
        yield from self.data[skip:]

    def loss(self, model, batch):
        self.calls += 1
        loss = ((model(batch.x).squeeze(-1) - batch.y) ** 2).sum()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return loss, batch.num_tokens

    def validation_part(self, model, rank, world):
        return ShardResult({"loss": next(self.metrics, 1.0) if rank == 0 else 0.0})

    def validation_metrics(self, whole):
        return {"loss": whole.sums["loss"]}

    def checkpoint_extras(self):
        return {}


def fake_batches(n: int, size: int = 3) -> list[FakeBatch]:
    g = torch.Generator().manual_seed(1)
    return [
        FakeBatch(torch.randn(size, 4, generator=g), torch.randn(size, generator=g))
        for _ in range(n)
    ]


def trainer(task, tmp_path, *overrides) -> Trainer:
    recipe = load_recipe(
        REPO / "recipes" / "reverse.toml",
        [
            "train.schedule='constant'",
            "train.warmup_steps=0",
            "train.lr=0.1",
            "train.clip_norm=0.0",
            "train.weight_decay=0.0",
            *overrides,
        ],
    )
    return Trainer(task, recipe, tmp_path, metric_key="loss", higher_is_better=False)


def test_accumulated_group_equals_one_big_batch(tmp_path):
    small = fake_batches(2, size=3)
    big = [FakeBatch(torch.cat([b.x for b in small]), torch.cat([b.y for b in small]))]
    a = trainer(FakeTask(small), tmp_path / "a", "train.accumulate=2", "train.max_steps=1")
    b = trainer(FakeTask(big), tmp_path / "b", "train.max_steps=1")
    a.fit()
    b.fit()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    t = trainer(
        FakeTask(fake_batches(20), nan_at=7), tmp_path, "train.valid_every=3", "train.max_steps=20"
    )
    with pytest.raises(TrainingError, match="non-finite loss"):
        t.fit()
    from seqlab.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "last.pt")["progress"]["step"] == 6


def test_early_stopping_with_patience(tmp_path):
    task = FakeTask(fake_batches(50), metrics=[1.0, 0.5, 0.6, 0.7, 0.4])
    t = trainer(task, tmp_path, "train.valid_every=2", "train.max_steps=50", "train.patience=2")
    summary = t.fit()
    assert summary["stopped_early"] and summary["step"] == 8 and summary["best"] == 0.5


def test_a_non_finite_validation_score_is_never_best(tmp_path):
    task = FakeTask(fake_batches(20), metrics=[float("inf"), float("nan"), 0.5, float("-inf")])
    t = trainer(task, tmp_path, "train.valid_every=2", "train.max_steps=4")
    assert t.fit()["best"] is None and not (tmp_path / "best.pt").exists()
    t.cfg = dataclasses.replace(t.cfg, max_steps=8)
    assert t.fit()["best"] == 0.5
    from seqlab.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "best.pt")["progress"]["step"] == 6
    assert json.loads((tmp_path / "checkpoints.json").read_text())["best"]["step"] == 6


def test_divergence_names_the_last_checkpoint_with_a_finite_validation_score(tmp_path):
    task = FakeTask(fake_batches(20), nan_at=9, metrics=[0.5, 0.6, 0.7, float("inf")])
    t = trainer(task, tmp_path, "train.valid_every=2", "train.max_steps=20")
    with pytest.raises(TrainingError) as stop:
        t.fit()
    message = str(stop.value)
    assert "non-finite loss at step 9" in message
    assert "last checkpoint with a finite validation loss: " in message
    assert message.endswith("checkpoint_6.pt")  # step 8's validation was infinite


def test_resuming_with_a_changed_model_or_data_names_the_keys(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY, "train.max_steps=2"])
    train_recipe(recipe, tmp_path / "run")
    log = (tmp_path / "run" / "log.jsonl").read_text()
    changed = load_recipe(
        REPO / "recipes" / "reverse.toml",
        [*TINY, "train.max_steps=4", "model.hidden_size=32", "data.min_freq=2"],
    )
    with pytest.raises(TrainingError) as error:
        train_recipe(changed, tmp_path / "run", resume=True)
    message = str(error.value)
    assert "model.hidden_size: 16 -> 32" in message and "data.min_freq: 1 -> 2" in message
    assert (tmp_path / "run" / "log.jsonl").read_text() == log  # a refused resume loses nothing
    longer = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY, "train.max_steps=4"])
    assert train_recipe(longer, tmp_path / "run", resume=True)["step"] == 4

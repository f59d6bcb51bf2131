"""Mixed precision (bf16 autocast; fp16 with a gradient scaler), torch.compile and fused AdamW,
on the fake linear-regression task of test_train.py, on the CPU."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from seqlab.checkpoint import load_checkpoint
from seqlab.execution import load_scaler_state, make_scaler
from seqlab.optim import build_optimizer
from tests.test_train import FakeBatch, FakeTask, fake_batches, trainer


def linear_batches(n: int, size: int = 8) -> list[FakeBatch]:
    """Batches of y = x . (1, -2, 0.5, 3) + 0.5: a regression the model can learn exactly."""
    g = torch.Generator().manual_seed(2)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    xs = [torch.randn(size, 4, generator=g) for _ in range(n)]
    return [FakeBatch(x, x @ w + 0.5) for x in xs]


class DtypeTask(FakeTask):
    """FakeTask that records the dtype the model computes in."""

    dtypes: set

    def loss(self, model, batch):
        self.dtypes = getattr(self, "dtypes", set()) | {model(batch.x).dtype}
        return super().loss(model, batch)


def logged(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def make(task, path, *overrides):
    return trainer(task, path, "train.device='cpu'", "train.log_every=1", *overrides)


def test_bf16_autocast_trains(tmp_path):
    task = DtypeTask(linear_batches(30))
    make(task, tmp_path, "train.precision='bf16'", "train.max_steps=30", "train.lr=0.05").fit()
    assert task.dtypes == {torch.bfloat16}
    losses = [r["loss"] for r in logged(tmp_path) if "loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_fp16_scaler_trains_and_reports_scale(tmp_path):
    task = DtypeTask(linear_batches(30))
    t = make(task, tmp_path, "train.precision='fp16'", "train.max_steps=30", "train.lr=0.05")
    t.fit()
    assert task.dtypes == {torch.float16} and t.scaler.is_enabled()
    records = [r for r in logged(tmp_path) if "loss" in r]
    assert all("loss_scale" in r for r in records)
    assert sum(r["loss"] for r in records[-5:]) < 0.5 * sum(r["loss"] for r in records[:5])
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["scaler"]["scale"] == t.scaler.get_scale()


def test_fp16_unscales_before_clipping(tmp_path):
    """The logged (and clipped) gradient norm is that of the true gradients, not scaled ones."""
    norms = {}
    for precision in ("fp32", "fp16"):
        t = make(FakeTask(fake_batches(1)), tmp_path / precision, f"train.precision='{precision}'",
                 "train.max_steps=1", "train.clip_norm=0.01")  # fmt: skip
        t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, enabled=t.scaler.is_enabled())
        t.fit()
        norms[precision] = t.grad_norm
    assert norms["fp16"] == pytest.approx(norms["fp32"], rel=2e-2)


class OneNaN(FakeTask):
    """FakeTask whose 4th loss is NaN."""

    def loss(self, model, batch):
        loss, n = super().loss(model, batch)
        return (loss * float("nan") if self.calls == 4 else loss), n


def test_fp16_overflow_step_is_skipped_not_fatal(tmp_path):
    """A NaN loss under fp16: the scaler skips that update and halves its scale; training goes on.
    Under fp32 the same loss stops the run (test_train.py)."""
    t = make(OneNaN(fake_batches(10)), tmp_path, "train.precision='fp16'", "train.max_steps=6")
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)  # no overflow from the scale itself
    weights = {}

    def keep(step: int) -> None:
        weights[step] = [p.detach().clone() for p in t.model.parameters()]

    t.on_step = keep
    t.fit()
    assert t.progress.step == 6 and t.progress.skipped_steps == 1
    for a, b in zip(weights[3], weights[4]):  # step 4 changed nothing
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert t.scaler.get_scale() == 2.0**3
    assert t.scheduler.last_epoch == 5  # the schedule counts the updates made


def test_fp16_resume_is_exact(tmp_path):
    """Scaler state (scale, growth tracker) travels in the checkpoint: 3 + 3 steps = 6 steps."""
    overrides = ["train.precision='fp16'", "train.valid_every=3"]
    straight = make(FakeTask(fake_batches(6)), tmp_path / "a", *overrides, "train.max_steps=6")
    straight.fit()
    first = make(FakeTask(fake_batches(6)), tmp_path / "b", *overrides, "train.max_steps=3")
    first.fit()
    resumed = make(FakeTask(fake_batches(6)), tmp_path / "b", *overrides, "train.max_steps=6")
    resumed.resume()
    assert resumed.scaler.get_scale() == first.scaler.get_scale()
    resumed.fit()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert straight.scaler.state_dict() == resumed.scaler.state_dict()


def test_scaler_state_from_an_fp32_checkpoint(caplog):
    scaler = make_scaler("fp16", torch.device("cpu"))
    load_scaler_state(scaler, {})  # an fp32 run saved an empty scaler state
    assert "no fp16 loss scale" in caplog.text
    load_scaler_state(make_scaler("fp32", torch.device("cpu")), {"scale": 8.0})  # ignored


def test_fused_adamw_matches_the_default(tmp_path):
    runs = {}
    for fused in (False, True):
        flag = f"train.fused_adamw={str(fused).lower()}"
        t = make(FakeTask(fake_batches(5)), tmp_path / flag, flag, "train.max_steps=5")
        assert t.optimizer.defaults["fused"] is (True if fused else None)
        t.fit()
        runs[fused] = [p.detach() for p in t.model.parameters()]
    for p, q in zip(runs[False], runs[True]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fused_adamw_falls_back_to_foreach(caplog):
    caplog.set_level("INFO", logger="seqlab")
    model = nn.Linear(3, 2, device="meta")  # no fused kernel for the meta device
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, fused=True)
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]
    assert "no fused AdamW kernel for meta" in caplog.text


def _compile_works() -> str | None:
    """None when torch.compile can build a tiny function here; else the reason it cannot."""
    if sys.version_info >= (3, 14):
        return "torch.compile does not support this Python yet"
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2))
    except Exception as error:  # any backend failure: no compiler, unsupported platform
        return f"torch.compile unavailable: {type(error).__name__}: {error}"
    return None


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path):
    reason = _compile_works()
    if reason:
        pytest.skip(reason)
    runs = {}
    for compiled in (False, True):
        t = make(FakeTask(fake_batches(4)), tmp_path / str(compiled),
                 f"train.compile={str(compiled).lower()}", "train.max_steps=4")  # fmt: skip
        t.fit()
        assert t.runner.compiled is compiled
        runs[compiled] = [p.detach() for p in t.model.parameters()]
        saved = load_checkpoint(tmp_path / str(compiled) / "last.pt")["model"]
        assert not any(key.startswith("_orig_mod") for key in saved)  # the plain module's keys
    for p, q in zip(runs[False], runs[True]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

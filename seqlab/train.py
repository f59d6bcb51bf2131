"""The one training loop, shared by every task.

A task (translation, language modelling, masked LM, classification) supplies the model, its
batches, its loss and its validation through the small `Task` protocol below; this loop owns
everything else: optimiser and schedule, gradient accumulation and clipping, mixed precision,
logging (tqdm on stderr, JSONL in the run folder), validation, best/last checkpoints, early
stopping, exact resumption, Ctrl-C and non-finite losses. A checkpoint written here holds the
resolved recipe, the task's vocabularies and tokenizers, the weights, optimiser/scheduler/RNG
state and the data position, so `train --resume` continues exactly and inference needs nothing
else.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from seqlab.checkpoint import CheckpointManager, load_checkpoint, rng_state, set_rng_state
from seqlab.config import Recipe
from seqlab.errors import SeqlabError
from seqlab.optim import build_optimizer, build_scheduler, clip_grad_norm


class TrainingError(SeqlabError):
    """Training cannot go on (a non-finite loss, a resume that does not match)."""


class Task(Protocol):
    """What the loop needs from a task. Batches have `.to(device)` and `.num_tokens`."""

    model: nn.Module

    def batches(self, epoch: int, skip: int) -> Iterable[Any]:
        """The training batches of `epoch` for this rank, without the first `skip`."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """(summed loss over the batch's tokens, number of tokens) for training."""
        ...

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics; must contain the key named by `metric_key`."""
        ...

    def checkpoint_extras(self) -> dict:
        """What inference needs besides weights (vocabularies, tokenizers)."""
        ...


@dataclass
class Progress:
    """Position of the run: saved in checkpoints so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best: float | None = None
    bad_validations: int = 0
    window_loss: float = 0.0
    window_tokens: int = 0
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Runs `task` under `recipe.train` in `run_dir`. See the module docstring."""

    def __init__(
        self,
        task: Task,
        recipe: Recipe,
        run_dir: Path,
        *,
        metric_key: str,
        higher_is_better: bool,
        on_step: Callable[[int], None] | None = None,
        rank: int = 0,
    ):
        self.task, self.recipe, self.cfg = task, recipe, recipe.train
        self.run_dir, self.rank, self.on_step = Path(run_dir), rank, on_step
        self.metric_key, self.higher_is_better = metric_key, higher_is_better
        self.device = resolve_device(self.cfg.device)
        self.model = task.model.to(self.device)
        self.optimizer = build_optimizer(
            self.model, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, betas=self.cfg.betas
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            self.cfg.schedule,
            warmup_steps=self.cfg.warmup_steps,
            total_steps=self.cfg.max_steps,
            min_lr_ratio=self.cfg.min_lr_ratio,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.precision == "fp16")
        self.progress = Progress()
        self.grad_norm = 0.0  # of the last step, before clipping
        self.checkpoints = CheckpointManager(self.run_dir, keep_last=self.cfg.keep_last)
        self.log_path = self.run_dir / "log.jsonl"

    # -- checkpoints ---------------------------------------------------------------------------
    def payload(self) -> dict:
        p = self.progress
        return {
            "recipe": self.recipe.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "progress": {k: v for k, v in vars(p).items() if k != "history"},
            "history": json.dumps(p.history),
            **self.task.checkpoint_extras(),
        }

    def save(self, metric: float | None = None) -> Path | None:
        if self.rank != 0:
            return None
        return self.checkpoints.save(
            self.progress.step,
            self.payload(),
            metric=metric,
            higher_is_better=self.higher_is_better,
        )

    def resume(self) -> None:
        path = self.checkpoints.latest()
        if path is None:
            raise TrainingError(f"--resume: no checkpoint in {self.run_dir}")
        state = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"], history=json.loads(state["history"]))
        set_rng_state(state["rng"])
        print(f"resumed from {path} at step {self.progress.step}", file=sys.stderr)

    # -- logging -------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        self.progress.history.append(record)
        if self.rank == 0:
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # -- one optimiser step --------------------------------------------------------------------
    def optimizer_step(self, group: list[Any]) -> tuple[float, int]:
        """Forward/backward `group` (accumulated batches), normalised by its total tokens."""
        total = sum(int(b.num_tokens) for b in group)
        loss_sum = 0.0
        for batch in group:
            with autocast_context(self.cfg.precision, self.device):
                loss, _ = self.task.loss(self.model, batch.to(self.device))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at step {self.progress.step + 1}; "
                    f"stopped. The last good checkpoint is kept: {self.checkpoints.latest()}"
                )
            self.scaler.scale(loss / max(total, 1)).backward()
            loss_sum += loss.item()
        self.scaler.unscale_(self.optimizer)
        self.grad_norm = clip_grad_norm(self.model.parameters(), self.cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss_sum, total

    def groups(self) -> Iterable[list[Any]]:
        """Groups of `accumulate` batches, epoch after epoch, tracking the data position."""
        p, group = self.progress, []
        while self.cfg.max_epochs is None or p.epoch < self.cfg.max_epochs:
            produced = p.batches_in_epoch
            for batch in self.task.batches(p.epoch, p.batches_in_epoch):
                p.batches_in_epoch += 1
                group.append(batch)
                if len(group) == self.cfg.accumulate:
                    yield group
                    group = []
            if p.batches_in_epoch == produced == 0:
                raise TrainingError(f"epoch {p.epoch} of the training data produced no batches")
            p.epoch, p.batches_in_epoch = p.epoch + 1, 0

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> bool:
        """Validate, checkpoint, and return True when early stopping says to stop."""
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.validate(self.model)
        self.model.train()
        p = self.progress
        self.log({"step": p.step, **{f"valid_{k}": v for k, v in metrics.items()}})
        value = metrics[self.metric_key]
        improved = p.best is None or (value > p.best if self.higher_is_better else value < p.best)
        if improved:
            p.best, p.bad_validations = value, 0
        else:
            p.bad_validations += 1
        self.save(metric=value)
        tqdm.write(
            f"step {p.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()),
            file=sys.stderr,
        )
        return self.cfg.patience is not None and p.bad_validations >= self.cfg.patience

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        p, cfg = self.progress, self.cfg
        self.model.train()
        bar = tqdm(
            total=cfg.max_steps,
            initial=p.step,
            desc=self.recipe.name,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=self.rank != 0 or None,
        )
        start, tokens_seen, stopped_early = time.perf_counter(), 0, False
        try:
            for group in self.groups():
                loss_sum, tokens = self.optimizer_step(group)
                p.step += 1
                p.window_loss, p.window_tokens = p.window_loss + loss_sum, p.window_tokens + tokens
                tokens_seen += tokens
                if p.step % cfg.log_every == 0:
                    self.log_window(tokens_seen / (time.perf_counter() - start), bar)
                bar.update(1)
                if self.on_step is not None:
                    self.on_step(p.step)
                if p.step % cfg.valid_every == 0 or p.step >= cfg.max_steps:
                    stopped_early = self.validate()
                if p.step >= cfg.max_steps or stopped_early:
                    break
        except KeyboardInterrupt:
            bar.close()
            path = self.save()
            print(
                f"interrupted at step {p.step}; saved {path} (resume with --resume)",
                file=sys.stderr,
            )
            raise
        bar.close()
        return {"step": p.step, "best": p.best, "stopped_early": stopped_early}

    def log_window(self, tokens_per_s: float, bar: tqdm) -> None:
        p = self.progress
        loss = p.window_loss / max(p.window_tokens, 1)
        lr = self.scheduler.get_last_lr()[0]
        self.log(
            {
                "step": p.step,
                "loss": loss,
                "ppl": math.exp(min(loss, 50)),
                "lr": lr,
                "grad_norm": self.grad_norm,
                "tokens_per_s": round(tokens_per_s, 1),
            }
        )
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}")
        if bar.disable and self.rank == 0:  # no terminal (a log file, CI): one line per window
            print(
                f"step {p.step}/{self.cfg.max_steps}: loss {loss:.3f}, lr {lr:.2e}, "
                f"{tokens_per_s:.0f} tokens/s",
                file=sys.stderr,
                flush=True,
            )
        p.window_loss, p.window_tokens = 0.0, 0


def plot_curves(log_path: Path, out: Path) -> Path | None:
    """Training and validation curves from the JSONL log; None (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: install the 'plot' extra (matplotlib) for training curves", file=sys.stderr)
        return None
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid_keys = sorted({k for r in records for k in r if k.startswith("valid_")})
    fig, axes = plt.subplots(1, 1 + len(valid_keys), figsize=(4 * (1 + len(valid_keys)), 3))
    axes = list(axes) if len(valid_keys) else [axes]
    axes[0].plot(*zip(*train), label="train loss") if train else None
    axes[0].set_xlabel("step")
    axes[0].set_title("train loss")
    for ax, key in zip(axes[1:], valid_keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), marker="o")
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

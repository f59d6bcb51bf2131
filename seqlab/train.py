"""The one training loop, shared by every task.

A task (translation, language modelling, masked LM, classification) supplies the model, its
batches, its loss and its validation through the small `TrainingTask` interface below; this loop
owns everything else: optimiser and schedule, gradient accumulation and clipping, mixed precision,
logging (stderr; log.jsonl and TensorBoard in the run folder), validation, best/last checkpoints,
early stopping, exact resumption, Ctrl-C and non-finite losses. A checkpoint written here holds the
resolved recipe, the task's vocabularies and tokenizers, the weights, optimiser/scheduler/RNG
state and the data position, so `train --resume` continues exactly and inference needs nothing
else. Under torchrun the same loop runs on every rank (see `Trainer`); how the forward and
backward execute (autocast, gradient scaler, compile, DDP) lives in `seqlab.execution`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from seqlab.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    set_rng_state,
)
from seqlab.config import Recipe
from seqlab.distributed import (
    DistContext,
    ShardResult,
    StopRequested,
    current,
    stop_requested,
)
from seqlab.errors import SeqlabError
from seqlab.execution import LossRunner, autocast_context, load_scaler_state, make_scaler
from seqlab.optim import build_optimizer, build_scheduler, clip_grad_norm
from seqlab.tensorboard_log import NoEventLog, open_event_log, samples_markdown

logger = logging.getLogger(__name__)

# fp16: skipped steps (overflow; the scale halves each time) in a row that mean a broken loss
MAX_SKIPPED_IN_A_ROW = 25


class TrainingError(SeqlabError):
    """Training cannot go on (a non-finite loss, a resume that does not match)."""


class TrainingTask:
    """What the training loop (`seqlab.train.Trainer`) drives: a model, its batches, its loss,
    its validation, and what a checkpoint must carry besides the weights. Batches have
    `.to(device)` and `.num_tokens`.

    Subclasses implement the first five methods; `state_dict` / `load_state_dict` are for a task
    that keeps state between steps (a language model's carried hidden state), so that
    `train --resume` continues exactly; `validation_samples` for one whose validation produces
    text worth showing in TensorBoard.
    """

    model: nn.Module

    def batches(self, epoch: int, skip: int) -> Iterable[Any]:
        """The training batches of `epoch` for this rank, without the first `skip`."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """(loss summed over the batch's tokens, number of tokens): the loop divides by the
        tokens of the whole step."""
        raise NotImplementedError

    def validation_part(self, model: nn.Module, rank: int, world: int) -> ShardResult:
        """Shard `rank` of `world` of the validation set, evaluated (the model is in eval mode
        and gradients are off). Its `sums` keys must not depend on the shard."""
        raise NotImplementedError

    def validation_metrics(self, whole: ShardResult) -> dict[str, float]:
        """Metrics of every shard's results merged; holds the spec's selection metric."""
        raise NotImplementedError

    def checkpoint_extras(self) -> dict:
        """What using the model needs besides its weights (tokenizers and vocabularies)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """State kept between training steps, saved in every checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what `state_dict` returned (called by `train --resume`)."""

    def validation_samples(self) -> list[tuple[str, str, str]]:
        """(input, output, reference) texts of the last validation, shown in TensorBoard
        (default: none)."""
        return []


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
    skipped_steps: int = 0  # fp16 steps the gradient scaler skipped (overflow)
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# What a resumed run must share with its checkpoint: the task, the model and the data (and so
# the vocabularies). [train] and [decode] may change (e.g. more steps).
RESUME_MUST_MATCH = ("task", "model", "data")


def recipe_changes(saved: dict, current: dict) -> list[str]:
    """'section.key: saved -> current' for each key of `RESUME_MUST_MATCH` that differs."""
    changes = []
    for section in RESUME_MUST_MATCH:
        old, new = saved.get(section), current.get(section)
        if not isinstance(old, dict) or not isinstance(new, dict):
            if old != new:
                changes.append(f"{section}: {old!r} -> {new!r}")
            continue
        for key in sorted(set(old) & set(new)):  # a key only one seqlab version knows: skip
            if old[key] != new[key]:
                changes.append(f"{section}.{key}: {old[key]!r} -> {new[key]!r}")
    return changes


def validate(
    task: TrainingTask, model: nn.Module, dist: DistContext | None = None
) -> dict[str, float]:
    """`task`'s validation metrics for `model`: each rank evaluates its shard, the results are
    combined, and every rank gets the same metrics. One process (the default) evaluates it all."""
    dist = dist or DistContext()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            part = task.validation_part(model, dist.rank, dist.world)
    finally:
        model.train(was_training)
    return task.validation_metrics(dist.combine(part))


class Trainer:
    """Runs `task` under `recipe.train` in `run_dir`. Under torchrun each rank runs it on its
    shard of batches inside DDP, each loss divided by the tokens of all ranks' groups (so the
    update equals one process's on their union); every rank validates its shard of the
    validation set and the results are combined (`validate`); rank 0 logs and writes
    checkpoints. `dist` defaults to the open process group, if any."""

    def __init__(
        self,
        task: TrainingTask,
        recipe: Recipe,
        run_dir: Path,
        *,
        metric_key: str,
        higher_is_better: bool,
        on_step: Callable[[int], None] | None = None,
        dist: DistContext | None = None,
    ):
        self.task, self.recipe, self.cfg = task, recipe, recipe.train
        self.run_dir, self.on_step = Path(run_dir), on_step
        self.dist = dist or current()
        self.metric_key, self.higher_is_better = metric_key, higher_is_better
        self.device = self.dist.device(self.cfg.device)
        self.model = task.model.to(self.device)
        if self.dist.rank > 0:  # distinct dropout per rank; DDP copies rank 0's weights
            seed_everything(recipe.seed + 7919 * self.dist.rank)
        self.runner = LossRunner(
            task, self.model, compile=self.cfg.compile, dist=self.dist,
            find_unused=self.cfg.ddp_find_unused_parameters,
        )  # fmt: skip
        self.optimizer = build_optimizer(
            self.model, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, betas=self.cfg.betas,
            fused=self.cfg.fused_adamw,
        )  # fmt: skip
        self.scheduler = build_scheduler(
            self.optimizer,
            self.cfg.schedule,
            warmup_steps=self.cfg.warmup_steps,
            total_steps=self.cfg.max_steps,
            min_lr_ratio=self.cfg.min_lr_ratio,
        )
        self.scaler = make_scaler(self.cfg.precision, self.device)
        self.progress = Progress()
        self.grad_norm = 0.0  # of the last step, before clipping
        self.skipped_in_a_row = 0
        self.checkpoints = CheckpointManager(self.run_dir, keep_last=self.cfg.keep_last)
        self.log_path = self.run_dir / "log.jsonl"
        # The first record replaces a log a killed run left; `resume` rewrites it from the
        # checkpoint instead, and a refused resume leaves it as it was.
        self._log_mode = "w"
        if self.dist.is_main:  # half-written checkpoints a killed run left
            remove_stale_temp_files(self.run_dir)
        self._events: NoEventLog | None = None  # TensorBoard, opened by the first record

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
            "world": self.dist.world,  # ranks that shared out the data position below
            "progress": {k: v for k, v in vars(p).items() if k != "history"},
            "history": json.dumps(p.history),
            "task_state": self.task.state_dict(),
            **self.task.checkpoint_extras(),
        }

    def save(self, metric: float | None = None, *, collective: bool = True) -> Path | None:
        """Rank 0 writes the checkpoint (with every rank's RNG state when `collective`: all
        ranks must then call this together); the others return None."""
        ranks_rng = self.dist.gather(rng_state()) if collective and self.dist.enabled else None
        if not self.dist.is_main:
            return None
        payload = self.payload()
        if ranks_rng is not None:
            payload["rng_ranks"] = ranks_rng
        return self.checkpoints.save(
            self.progress.step, payload, metric=metric, higher_is_better=self.higher_is_better
        )

    def resume(self) -> None:
        path = self.checkpoints.latest()
        if path is None:
            raise TrainingError(f"--resume: no checkpoint in {self.run_dir}")
        state = load_checkpoint(path, map_location=self.device)
        changed = recipe_changes(state.get("recipe", {}), self.recipe.to_dict())
        if changed:
            raise TrainingError(
                f"--resume: the recipe's model or data differ from {path}'s: "
                + "; ".join(changed)
                + ". Resume with the run's own recipe (recipe.json in the run folder), "
                "or start a new run with --run-dir"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.scaler, state["scaler"])
        self.progress = Progress(**state["progress"], history=json.loads(state["history"]))
        self.task.load_state_dict(state.get("task_state") or {})
        if self.dist.is_main:  # the log of the checkpoint's steps: none logged after it twice
            text = "".join(json.dumps(record) + "\n" for record in self.progress.history)
            self.log_path.write_text(text, encoding="utf-8")
            self._log_mode = "a"
        ranks_rng, world = state.get("rng_ranks"), state.get("world", 1)
        if self.dist.enabled and ranks_rng is not None and len(ranks_rng) == self.dist.world:
            set_rng_state(ranks_rng[self.dist.rank])
        else:  # one process, or a checkpoint saved on Ctrl-C: rank 0's state, re-seeded elsewhere
            set_rng_state(state["rng"])
            if self.dist.rank > 0:
                seed_everything(self.recipe.seed + 7919 * self.dist.rank + self.progress.step)
        if world != self.dist.world:  # batches per rank differ: keep the share of the epoch done
            self.progress.batches_in_epoch = (
                self.progress.batches_in_epoch * world // self.dist.world
            )
            logger.warning(
                "saved by %d processes, resumed by %d: the data position within the epoch is "
                "approximate", world, self.dist.world,
            )  # fmt: skip
        if self.dist.is_main:
            logger.info("resumed from %s at step %d", path, self.progress.step)

    # -- logging -------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Keep `record` in the history; rank 0 appends it to log.jsonl and TensorBoard."""
        self.progress.history.append(record)
        if self.dist.is_main:
            with self.log_path.open(self._log_mode, encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self._log_mode = "a"
            self.events.scalars(record["step"], record)

    @property
    def events(self) -> NoEventLog:
        if self._events is None:
            self._events = open_event_log(self.run_dir) if self.dist.is_main else NoEventLog()
        return self._events

    # -- one optimiser step --------------------------------------------------------------------
    def optimizer_step(self, group: list[Any], total: int) -> float:
        """Forward/backward `group` (accumulated batches) and update; returns the summed loss of
        every rank's group. `total` is the tokens of all ranks' groups: each loss is divided by
        it, and multiplied by the number of ranks since DDP averages gradients over them."""
        factor = self.dist.world / max(total, 1)
        loss_sum, bad = 0.0, 0
        for i, batch in enumerate(group):
            with self.runner.sync(i == len(group) - 1):
                with autocast_context(self.cfg.precision, self.device):
                    loss, _ = self.runner(batch.to(self.device))
                value = loss.item()
                bad += not math.isfinite(value)
                self.scaler.scale(loss * factor).backward()
            loss_sum += value
        loss_sum, bad = self.dist.all_reduce_sum([loss_sum, bad])
        if bad and not self.scaler.is_enabled():  # fp16: the scaler skips the step below
            raise TrainingError(
                f"non-finite loss at step {self.progress.step + 1}; stopped."
                + self.kept_checkpoint_note()
            )
        self.scaler.unscale_(self.optimizer)
        self.grad_norm = clip_grad_norm(self.model.parameters(), self.cfg.clip_norm)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.get_scale() < scale:  # skipped: gradients overflowed in fp16
            self.note_skipped_step()
        else:
            self.skipped_in_a_row = 0
            self.scheduler.step()
        return loss_sum

    def kept_checkpoint_note(self) -> str:
        """Which checkpoint to go back to after a divergence: the newest one whose validation
        score was finite (numbered, else best.pt), or none."""
        key = f"valid_{self.metric_key}"
        finite = [r["step"] for r in self.progress.history if math.isfinite(r.get(key, math.nan))]
        for step in reversed(finite):
            path = self.run_dir / f"checkpoint_{step}.pt"
            if path.is_file():
                return f" The last checkpoint with a finite validation {self.metric_key}: {path}"
        best = self.checkpoints.best()
        if best is not None:
            return f" The best checkpoint (finite validation {self.metric_key}) is kept: {best}"
        return " No checkpoint with a finite validation score was written."

    def note_skipped_step(self) -> None:
        self.progress.skipped_steps += 1
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise TrainingError(
                f"fp16: {self.skipped_in_a_row} steps in a row had non-finite gradients "
                f"(loss scale now {self.scaler.get_scale():.3g}) at step {self.progress.step + 1};"
                " stopped." + self.kept_checkpoint_note()
            )

    def groups(self) -> Iterable[tuple[list[Any], int]]:
        """(group of `accumulate` batches, tokens of all ranks' groups), epoch after epoch,
        tracking the data position. Ranks agree before each step that all have a group; when
        one runs out first, all drop the rest of the epoch (none waits forever for a peer)."""
        p, group = self.progress, []
        while self.cfg.max_epochs is None or p.epoch < self.cfg.max_epochs:
            steps, uneven = 0, False
            for batch in self.task.batches(p.epoch, p.batches_in_epoch):
                p.batches_in_epoch += 1
                group.append(batch)
                if len(group) == self.cfg.accumulate:
                    ready, total, _ = self.agree(group, 0)  # all ranks have a group?
                    if ready < self.dist.world:
                        uneven = True
                        break
                    yield group, int(total)
                    group, steps = [], steps + 1
            else:
                ready, _, all_produced = self.agree([], p.batches_in_epoch)
                uneven = ready > 0  # peers still had batches
                if not uneven and all_produced == 0:
                    raise TrainingError(f"epoch {p.epoch} of the training data produced no batches")
            if uneven:
                group = []  # every rank restarts its groups in step with the others
                if steps == 0:
                    raise TrainingError(
                        f"epoch {p.epoch}: the ranks have different numbers of batches; the "
                        "task must give every rank the same number (BucketBatchSampler does)"
                    )
            p.epoch, p.batches_in_epoch = p.epoch + 1, 0

    def agree(self, group: list[Any], produced: int) -> list[float]:
        """Summed over ranks: [ranks with a full group, its tokens, batches produced]; raises
        StopRequested on every rank when any rank was asked to stop."""
        tokens = sum(int(b.num_tokens) for b in group)
        ready, total, all_produced, stop = self.dist.all_reduce_sum(
            [1.0 if group else 0.0, float(tokens), float(produced), float(stop_requested())]
        )
        if stop:
            raise StopRequested
        return [ready, total, all_produced]

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> bool:
        """Validate (every rank its shard, see `validate`), checkpoint, and return True when
        early stopping says to stop."""
        metrics = validate(self.task, self.model, self.dist)
        p = self.progress
        self.log({"step": p.step, **{f"valid_{k}": v for k, v in metrics.items()}})
        samples = self.task.validation_samples()
        if samples and self.dist.is_main:
            self.events.text(p.step, "valid/samples", samples_markdown(samples))
        value = metrics[self.metric_key]
        improved = math.isfinite(value) and (
            p.best is None or (value > p.best if self.higher_is_better else value < p.best)
        )
        if improved:
            p.best, p.bad_validations = value, 0
        else:
            p.bad_validations += 1
        self.save(metric=value)
        self.dist.barrier()  # the others wait while rank 0 writes
        if self.dist.is_main:
            logger.info(
                "step %d: %s", p.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            )
        return self.cfg.patience is not None and p.bad_validations >= self.cfg.patience

    # -- the loop ------------------------------------------------------------------------------
    def finished(self) -> bool:
        """True when the run has reached `max_steps` or `max_epochs`, or early stopping ended it:
        a resumed finished run must not take another step."""
        p, cfg = self.progress, self.cfg
        return (
            p.step >= cfg.max_steps
            or (cfg.max_epochs is not None and p.epoch >= cfg.max_epochs)
            or (cfg.patience is not None and p.bad_validations >= cfg.patience)
        )

    def validated_at(self, step: int) -> bool:
        return any(
            r.get("step") == step and any(k.startswith("valid_") for k in r)
            for r in self.progress.history
        )

    def fit(self) -> dict:
        """Train until `finished()`, then make sure the last step was validated (and so
        checkpointed). A run resumed after it finished trains no further step."""
        p, cfg = self.progress, self.cfg
        stopped_early = cfg.patience is not None and p.bad_validations >= cfg.patience
        if not self.finished():
            stopped_early = self.train_steps()
        if p.step > 0 and not self.validated_at(p.step):  # max_epochs ended it, or a stop did
            stopped_early = self.validate() or stopped_early
        return {"step": p.step, "best": p.best, "stopped_early": stopped_early}

    def train_steps(self) -> bool:
        """Optimiser steps until `max_steps`, `max_epochs` or early stopping; returns whether
        early stopping ended it. Ctrl-C / SIGTERM save a checkpoint and re-raise."""
        p, cfg = self.progress, self.cfg
        self.model.train()
        bar = tqdm(
            total=cfg.max_steps,
            initial=p.step,
            desc=self.recipe.name,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not self.dist.is_main or None,
        )
        start, tokens_seen, stopped_early = time.perf_counter(), 0, False
        done = (p.epoch, p.batches_in_epoch)  # data position after the last completed step
        try:
            for group, tokens in self.groups():
                loss_sum = self.optimizer_step(group, tokens)
                p.step += 1
                done = (p.epoch, p.batches_in_epoch)
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
        except (KeyboardInterrupt, StopRequested) as stop:
            bar.close()
            p.epoch, p.batches_in_epoch = done  # a step cut short is redone on resume
            path = self.save(collective=isinstance(stop, StopRequested))  # else peers may be gone
            if self.dist.is_main:
                logger.warning(
                    "interrupted at step %d; saved %s (resume with --resume)", p.step, path
                )
            raise KeyboardInterrupt from None
        finally:
            if self._events is not None:
                self._events.close()
                self._events = None
        bar.close()
        return stopped_early

    def log_window(self, tokens_per_s: float, bar: tqdm) -> None:
        p = self.progress
        loss = p.window_loss / max(p.window_tokens, 1)
        lr = self.scheduler.get_last_lr()[0]
        record = {
            "step": p.step,
            "loss": loss,
            "ppl": math.exp(min(loss, 50)),
            "lr": lr,
            "grad_norm": self.grad_norm,
            "tokens_per_s": round(tokens_per_s, 1),
        }
        if self.scaler.is_enabled():
            record.update(loss_scale=self.scaler.get_scale(), skipped_steps=p.skipped_steps)
        self.log(record)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}")
        if bar.disable and self.dist.is_main:  # no terminal (a log file, CI): one line per window
            logger.info(
                "step %d/%d: loss %.3f, lr %.2e, %.0f tokens/s",
                p.step, self.cfg.max_steps, loss, lr, tokens_per_s,
            )  # fmt: skip
        p.window_loss, p.window_tokens = 0.0, 0

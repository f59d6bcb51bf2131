"""How the training forward and backward run: autocast, gradient scaling, compile and DDP.

`train.precision` picks fp32, bf16 (autocast to bfloat16: no scaler needed, bf16 has fp32's
range) or fp16 (autocast to float16 and a `GradScaler`, which multiplies the loss before backward
so small gradients survive in fp16, unscales them before clipping, and skips a step whose gradients
overflowed, halving the scale). `train.compile` passes the model through `torch.compile`.
Under torchrun the task's loss runs inside `DistributedDataParallel`, so gradients are averaged
over the ranks during backward; `no_sync` skips that on all but the last micro-batch of a group.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from seqlab.distributed import DistContext
from seqlab.errors import SeqlabError

logger = logging.getLogger(__name__)


def autocast_context(precision: str, device: torch.device):
    """Autocast to bf16 / fp16 for `precision` "bf16" / "fp16"; nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (a disabled one passes everything through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Restore a checkpoint's scaler state; a checkpoint from an fp32/bf16 run has none."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)
    elif scaler.is_enabled():
        logger.warning("the checkpoint has no fp16 loss scale; starting from the default")


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """`torch.compile(model)` when `enabled`; the model itself when not, or when this platform's
    torch cannot compile (a note on stderr says so). Compilation happens at the first forward;
    `CompileFailure` reports a failure there."""
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except RuntimeError as error:  # e.g. a Python version dynamo does not support yet
        logger.warning(
            "train.compile: torch.compile is unavailable here (%s); running eagerly", error
        )
        return model


class TaskLoss(nn.Module):
    """The task's loss as one module call, so DDP sees exactly one forward per backward however
    many model methods the task's `loss` uses. `forward(batch) -> (summed loss, count)`."""

    def __init__(self, task: Any, model: nn.Module):
        super().__init__()
        self.model = model  # registered: its parameters are DDP's to synchronise
        self.task = task  # a plain object, not a module

    def forward(self, batch: Any) -> tuple[Tensor, int]:
        return self.task.loss(self.model, batch)


class LossRunner:
    """Runs `task.loss` on the (possibly compiled) model, inside DDP when there are peers.

    Args:
        task: has `loss(model, batch) -> (summed loss, count)`.
        model: the plain module on its device (what checkpoints and validation use).
        compile: pass the model through `torch.compile` for training.
        dist: this process's place in the job.
        find_unused: DDP's `find_unused_parameters` (models leaving parameters without gradient).
    """

    def __init__(
        self, task: Any, model: nn.Module, *, compile: bool, dist: DistContext, find_unused: bool
    ):
        forward_model = compile_model(model, compile)
        self.compiled = forward_model is not model
        module: nn.Module = TaskLoss(task, forward_model)
        if dist.enabled:
            # device_ids=None: batches are already on the device, and DDP need not copy them.
            module = DistributedDataParallel(module, find_unused_parameters=find_unused)
        self.module = module

    def sync(self, enabled: bool):
        """A context for one micro-batch's forward and backward: without `enabled`, DDP does not
        all-reduce its gradients (they accumulate locally until the group's last micro-batch)."""
        if enabled or not isinstance(self.module, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.module.no_sync()

    def __call__(self, batch: Any) -> tuple[Tensor, int]:
        try:
            return self.module(batch)
        except Exception as error:
            if self.compiled and _is_compile_error(error):
                raise CompileFailure(error) from error
            raise


class CompileFailure(SeqlabError):
    """torch.compile could not build the model on this platform."""

    def __init__(self, error: Exception):
        super().__init__(
            f"train.compile = true: torch.compile failed on this platform "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "set train.compile = false"
        )


def _is_compile_error(error: Exception) -> bool:
    module = type(error).__module__
    return module.startswith(("torch._dynamo", "torch._inductor"))

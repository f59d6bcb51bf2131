"""Data-parallel training: the torchrun environment, the process group, and rank-aware helpers.

`torchrun --nproc_per_node=N -m seqlab train RECIPE` starts N copies of `seqlab train` with
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment. `session` reads
them, opens the process group (NCCL when the recipe trains on CUDA, gloo on CPU) and destroys it
in a `finally`, so neither Ctrl-C nor an error leaves workers waiting on a dead peer. Ctrl-C on
torchrun makes it send SIGINT (SIGTERM when it got SIGTERM) to every worker, then SIGKILL 30 s
later. Inside a session the first such signal only sets a flag (`stop_requested`); the training
loop's per-step agreement between ranks sees it, and every rank stops at the same step, rank 0
saves, all exit. A second signal raises KeyboardInterrupt at once. Without WORLD_SIZE > 1 every
helper here is a no-op for a single process, so the same code runs with and without torchrun.

The training loop (`seqlab.train`) is the only place that calls the collectives; tasks only take
`rank` / `world` to shard their batches (`seqlab.data.sampler.BucketBatchSampler`) and their
validation set. Each rank validates its shard and returns a `ShardResult` (sums, and per-example
outputs such as translations); `DistContext.combine` gives every rank the whole, from which the
task computes its metrics (corpus BLEU needs every sentence, so translations are gathered rather
than scores averaged).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from seqlab.errors import ConfigError

# How long a rank waits in a collective before giving up. Ranks wait for each other at every
# step and after validation (a shard of a validation set decoded), and rank 0 saves checkpoints
# while the others wait; this must exceed the longest of those.
TIMEOUT = datetime.timedelta(minutes=30)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """The device `name` names ("auto" is CUDA when there is one, else the CPU).

    Raises:
        ConfigError: naming `what` (the recipe key or flag), for a name torch does not know or a
            device this machine does not have (e.g. "cuda" on a CPU-only machine).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{what} = {name!r} is not a device (cpu, cuda, cuda:N, mps, auto)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{what} = {name!r}, but this machine has no CUDA device "
                f"(torch {torch.__version__}); use 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what} = {name!r}, but this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what} = {name!r}, but MPS is not available on this machine")
    return device


@dataclass(frozen=True)
class ShardResult:
    """One rank's share of an evaluation over a sharded dataset, or the merged whole.

    Attributes:
        sums: quantities that add up over shards (summed losses, token and example counts).
        outputs: (example index, output) pairs for metrics that need every example at once
            (translations for corpus BLEU); merged in index order.
    """

    sums: dict[str, float]
    outputs: tuple[tuple[int, Any], ...] = ()

    @staticmethod
    def merge(parts: Sequence[ShardResult]) -> ShardResult:
        """The whole of `parts`: sums added (`math.fsum`, so the order of the shards does not
        matter), outputs concatenated and sorted by example index.

        Raises:
            ValueError: the parts have different sum keys, or two claim the same example.
        """
        keys = sorted(parts[0].sums)
        for part in parts[1:]:
            if sorted(part.sums) != keys:
                raise ValueError(f"shards disagree on their sums: {keys} vs {sorted(part.sums)}")
        sums = {key: math.fsum(part.sums[key] for part in parts) for key in keys}
        outputs = sorted((pair for part in parts for pair in part.outputs), key=lambda p: p[0])
        indices = [index for index, _ in outputs]
        if len(set(indices)) != len(indices):
            raise ValueError("two shards hold outputs for the same example")
        return ShardResult(sums, tuple(outputs))


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: rank r of `world`, on GPU `local_rank` of its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when there are peers (a process group with more than one rank)."""
        return self.world > 1

    def device(self, name: str) -> torch.device:
        """The device for `train.device` = `name`: each rank on CUDA takes GPU `local_rank`.

        Raises:
            ConfigError: under torchrun, for a device with an explicit index ("cuda:1"), since
                every rank would then use the same GPU; or CUDA asked for but absent.
        """
        if self.enabled and name.startswith("cuda:"):
            raise ConfigError(
                f"train.device = {name!r}: under torchrun each rank takes GPU LOCAL_RANK; "
                "set train.device = 'cuda' or 'auto'"
            )
        device = resolve_device(name)
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    # -- collectives (no-ops for one process) ---------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Elementwise sum of `values` over the ranks (float64, so token counts stay exact)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device())  # (n,)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (any picklable value)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (any picklable value), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def combine(self, part: ShardResult) -> ShardResult:
        """Every rank's `part` merged (`ShardResult.merge`): the same whole on every rank."""
        return ShardResult.merge(self.all_gather(part))

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` as a list on rank 0 (None on the others)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the body on rank 0 first, then on the others (e.g. filling a shared cache)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def _comm_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def env_context() -> DistContext:
    """The context torchrun's environment describes (one process when WORLD_SIZE is unset).

    Raises:
        ConfigError: when RANK / WORLD_SIZE / LOCAL_RANK are not integers or out of range.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise ConfigError(
            f"torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank} "
            "is not a valid placement"
        )
    return DistContext(rank=rank, world=world, local_rank=local_rank)


def current() -> DistContext:
    """This process's context: from the open process group, else one process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            rank=dist.get_rank(),
            world=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", dist.get_rank()),
        )
    return DistContext()


def is_main() -> bool:
    """True on rank 0, and in a plain single process (also after the group is destroyed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


_STOP = threading.Event()


class StopRequested(Exception):
    """Raised on every rank when any rank saw a stop request (see `stop_requested`)."""


def stop_requested() -> bool:
    """True once SIGINT or SIGTERM arrived during a multi-process `session`."""
    return _STOP.is_set()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _request_stop(signum: int, frame: Any) -> None:
    if _STOP.is_set():  # asked twice: stop now, wherever we are
        raise KeyboardInterrupt(f"signal {signum}")
    _STOP.set()


@contextlib.contextmanager
def session(device_name: str = "auto") -> Iterator[DistContext]:
    """Open the process group torchrun asked for (if any); always close it on the way out.

    Yields the `DistContext`. With WORLD_SIZE > 1: NCCL when `device_name` resolves to CUDA,
    gloo otherwise; the CUDA device is set to LOCAL_RANK; SIGINT and SIGTERM request a stop (see
    the module docstring) for the duration. In a single process SIGTERM raises KeyboardInterrupt,
    so `kill PID` saves and stops a run as Ctrl-C does (a background job started from a script
    ignores SIGINT). A process group opened by the caller is used as it is and left open.

    Raises:
        ConfigError: a malformed torchrun environment, or a device every rank cannot use.
    """
    ctx = env_context()
    if dist.is_initialized():
        yield current()
        return
    if not ctx.enabled:  # one process: SIGTERM (kill, a scheduler's preemption) acts as Ctrl-C
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            yield ctx
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return
    device = ctx.device(device_name)  # checks the device before any rank blocks
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    previous = {}
    if threading.current_thread() is threading.main_thread():
        _STOP.clear()
        previous = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        dist.init_process_group(
            backend=backend, rank=ctx.rank, world_size=ctx.world, timeout=TIMEOUT
        )
        yield ctx
    finally:
        teardown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def teardown() -> None:
    """Destroy the process group if one is open (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

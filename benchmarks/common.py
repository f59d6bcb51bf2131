"""Shared machinery of the benchmarks: scales, batches, interleaved timing and peak memory.

Scales (`SEQLAB_BENCH_SCALE`, or `python -m benchmarks --quick/--tiny`):
- "full": real Multi30k batches (the recipes' tokenization, seqlab's bucketed sampler), the
  recipes' model sizes, three interleaved repetitions: what `make bench` runs.
- "quick": the same data and sizes, fewer batches and repetitions.
- "tiny": synthetic batches and tiny models, seconds in all: what the tests run.

Timing is interleaved: every repetition runs each case once, in an order rotated by one per
repetition, so that a change in machine load hits every case alike; each repetition's time is
reported, and ratios are formed per repetition (same load) before taking their median.

Clock: on CPU the benchmarks run torch on one thread (`SEQLAB_BENCH_THREADS` overrides) and time
the process's CPU time, which counts the work done whatever else the machine runs: a benchmark
sharing its cores with training runs (or niced below them) gets an unknown share of wall time,
but its CPU time is what it computed. With more threads (OpenMP spin-waits count as CPU time) or
on a GPU the clock is the wall clock. Both are recorded; `clock` says which the rates use.

Peak memory on CPU is measured in a fresh child process per case (`python -m benchmarks.common`):
the peak resident set size (VmHWM, reset through /proc/self/clear_refs) during two repetitions
minus the resident size just before them, after the model, optimizer and batches exist. It counts
gradients, optimizer moments, activations and allocator slack. tracemalloc cannot see torch's
allocations, and an in-process RSS delta would depend on what earlier cases left in the heap. On
a GPU it is `torch.cuda.max_memory_allocated` minus the allocation before the repetitions.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SCALE_ENV = "SEQLAB_BENCH_SCALE"


@dataclass(frozen=True)
class Scale:
    """How much work a benchmark does.

    Attributes:
        name: "full", "quick" or "tiny".
        repeats: interleaved repetitions per case.
        batches: training batches per repetition.
        max_tokens: token budget of a training batch (bucketed sampler).
        real_data: Multi30k batches from the recipes; False: synthetic batches.
        tiny_models: shrink every model to a few thousand parameters.
        decode_sentences: sentences decoded one at a time (batch 1) per repetition.
        decode_batches: batches of 64 sentences decoded per repetition.
        decode_steps: forced output length of every decoded sentence.
        decode_repeats: interleaved repetitions per decoding case. Decoding is many short
            kernels, whose time varies more with the machine's other tenants than training's
            long ones (up to 1.3x between repetitions of one case in a run, on a shared host), so
            the median ratio needs more repetitions to settle.
    """

    name: str
    repeats: int
    batches: int
    max_tokens: int
    real_data: bool
    tiny_models: bool
    decode_sentences: int
    decode_batches: int
    decode_steps: int
    decode_repeats: int


SCALES = {
    "full": Scale("full", 3, 3, 2000, True, False, 8, 1, 25, 7),
    "quick": Scale("quick", 2, 2, 2000, True, False, 4, 1, 20, 3),
    "tiny": Scale("tiny", 2, 2, 200, False, True, 2, 1, 4, 2),
}


def get_scale(name: str | None = None) -> Scale:
    """The named scale, else $SEQLAB_BENCH_SCALE, else "full"."""
    name = name or os.environ.get(SCALE_ENV) or "full"
    if name not in SCALES:
        raise ValueError(f"unknown benchmark scale {name!r}: use one of {sorted(SCALES)}")
    return SCALES[name]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def transformers_or_none():
    """The `transformers` module (the `bench` extra), or None when it is not installed."""
    try:
        return importlib.import_module("transformers")
    except ImportError:
        return None


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- timing -----------------------------------------------------------------------------------


THREADS_ENV = "SEQLAB_BENCH_THREADS"


def set_threads() -> int:
    """On CPU: torch threads = $SEQLAB_BENCH_THREADS, else 1. Returns the number in use."""
    if device().type == "cpu":
        torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    return torch.get_num_threads()


def clock() -> str:
    """ "cpu" (process CPU time) on one CPU thread, else "wall"."""
    return "cpu" if device().type == "cpu" and torch.get_num_threads() == 1 else "wall"


@dataclass
class Timings:
    """Per case, seconds of each repetition on the chosen clock and on the wall clock."""

    clock: str
    times: dict[str, list[float]]
    wall: dict[str, list[float]]


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, label: str = "") -> Timings:
    """Time each case: one warm-up call each, then `repeats` rounds; progress on stderr.

    Round r runs the cases in their order rotated by r, so no case always runs first or last.
    """
    names, which = list(cases), clock()
    for name in names:
        cases[name]()
    synchronize()
    out = Timings(which, {n: [] for n in names}, {n: [] for n in names})
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time.perf_counter(), time.process_time()
            cases[name]()
            synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out.times[name].append(round(cpu if which == "cpu" else wall, 4))
            out.wall[name].append(round(wall, 4))
    for name in names:
        print(f"  {label} {name}: {which} s {out.times[name]}", file=sys.stderr, flush=True)
    return out


def paired_ratio(fast: list[float], slow: list[float]) -> float:
    """Median over repetitions of slow[r] / fast[r]: how many times faster `fast` is."""
    return round(statistics.median(s / f for f, s in zip(fast, slow, strict=True)), 3)


def rate(amount: float, seconds: list[float]) -> float:
    """amount per second at the median time."""
    return round(amount / statistics.median(seconds), 2)


# --- peak memory ------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def measure_peak(work: Callable[[], object], repeats: int = 2) -> dict:
    """Peak memory above the current level while `work()` runs `repeats` times (this process)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(repeats):
            work()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        return {"peak_mib": round(peak / 2**20, 1), "memory_method": "cuda max_memory_allocated"}
    gc.collect()  # garbage freed during `work` would lower the RSS under the measured peak
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    for _ in range(repeats):
        work()
    peak = _status_kib("VmHWM") - before
    return {"peak_mib": round(peak / 1024, 1), "memory_method": "peak RSS delta, child process"}


def peak_in_child(module: str, family: str, case: str, scale: Scale) -> dict:
    """Run `benchmarks.<module>.workload(family, case, scale)` in a fresh process; its peak."""
    command = [sys.executable, "-m", "benchmarks.common", module, family, case, scale.name]
    env = {**os.environ, THREADS_ENV: str(torch.get_num_threads())}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"peak_mib": None, "memory_method": "failed: " + " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(module: str, family: str, case: str, scale_name: str) -> None:
    set_threads()
    torch.manual_seed(0)
    work = importlib.import_module(f"benchmarks.{module}").workload(
        family, case, get_scale(scale_name)
    )
    print(json.dumps(measure_peak(work.run)))


if __name__ == "__main__":
    _child(*sys.argv[1:5])

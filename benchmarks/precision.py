"""What bf16 autocast and the fused AdamW kernel buy on this machine's CPU, side by side.

A CPU with AVX512-BF16 or AMX multiplies bf16 matrices several times faster than float32 ones,
and torch's default (foreach) AdamW reads and writes every parameter several times per step,
which is slow over a large embedding table. Three training-step cases of the WikiText-2 LSTM
recipe's model (`recipes/wikitext2-lstm.toml`: 640-wide, 2 layers, adaptive softmax over its
33,282-word vocabulary; 64 x 35 tokens a step, Zipf-distributed ids) run interleaved: float32
with foreach AdamW (torch's defaults), bf16 autocast with foreach AdamW, and bf16 with fused
AdamW (what the recipe sets). Ratios are against the first. Also the raw float32 and bf16
matrix-product rates of one (2240 x 640) @ (640 x 2560) product, the recipe's LSTM input
projection. The tiny scale shrinks the model and batch to seconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import Scale, clock, get_scale, interleaved, paired_ratio, rate, set_threads
from seqlab.config import load_recipe
from seqlab.models.language_model import LMConfig, build_language_model

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "wikitext2-lstm.toml"
VOCAB = 33282  # the recipe's vocabulary on WikiText-2 (the corpus itself is not needed)
CASES = {  # name -> (autocast to bf16, fused AdamW)
    "fp32, foreach AdamW": (False, False),
    "bf16, foreach AdamW": (True, False),
    "bf16, fused AdamW": (True, True),
}


def _setup(scale: Scale) -> tuple[LMConfig, int, int, int]:
    """(model config, vocabulary, rows, steps) of the recipe, or a tiny stand-in."""
    recipe = load_recipe(RECIPE)
    if scale.tiny_models:
        tiny = dict(embed_dim=16, hidden_size=16, adaptive_cutoffs=(50, 200))
        return dataclasses.replace(recipe.model.config, **tiny), 500, 4, 8
    return recipe.model.config, VOCAB, 64, recipe.data.bptt


def _train_step(
    config: LMConfig, vocab: int, rows: int, steps: int, bf16: bool, fused: bool, batches: int
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_language_model(config, vocab).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    data = [
        torch.multinomial(zipf, rows * (steps + 1), replacement=True).view(rows, steps + 1)
        for _ in range(batches)
    ]  # (B, T + 1) ids, frequent words first as in a sorted vocabulary

    def run() -> None:
        for ids in data:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                features, _ = model.run(ids[:, :-1])  # (B, T, H)
                loss = model.nll(features, ids[:, 1:]).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def _matmul_rate(dtype: torch.dtype, tiny: bool) -> float:
    """GFLOP/s of the recipe's LSTM input projection as one product in `dtype`."""
    m, k, n = (64, 16, 64) if tiny else (2240, 640, 2560)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    repeats = 3 if tiny else 20
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def run(scale: str | None = None) -> dict:
    chosen, threads = get_scale(scale), set_threads()
    config, vocab, rows, steps = _setup(chosen)
    steps_of = {
        name: _train_step(config, vocab, rows, steps, bf16, fused, chosen.batches)
        for name, (bf16, fused) in CASES.items()
    }
    timings = interleaved(steps_of, chosen.repeats, "precision")
    tokens = rows * steps * chosen.batches
    base = timings.times["fp32, foreach AdamW"]
    cases = {
        name: {
            "times_s": timings.times[name],
            "tokens_per_s": rate(tokens, timings.times[name]),
            "speedup": paired_ratio(timings.times[name], base),
        }
        for name in CASES
    }
    return {
        "scale": chosen.name,
        "threads": threads,
        "clock": clock(),
        "model": {"vocab": vocab, "rows": rows, "bptt": steps, **dataclasses.asdict(config)},
        "tokens_per_repetition": tokens,
        "cases": cases,
        "matmul_gflops": {
            "float32": round(_matmul_rate(torch.float32, chosen.tiny_models), 1),
            "bfloat16": round(_matmul_rate(torch.bfloat16, chosen.tiny_models), 1),
        },
    }


def markdown(result: dict) -> str:
    rows = [
        f"| case | tokens/s | {result['clock']} seconds per repetition | speed-up over fp32 |",
        "|---|---|---|---|",
    ]
    for name, e in result["cases"].items():
        times = ", ".join(f"{t:.2f}" for t in e["times_s"])
        rows.append(f"| {name} | {e['tokens_per_s']:,.0f} | {times} | {e['speedup']:.2f}x |")
    mm = result["matmul_gflops"]
    rows.append("")
    rows.append(f"matrix product: {mm['float32']:.0f} GFLOP/s float32, {mm['bfloat16']:.0f} bf16")
    return "\n".join(rows)

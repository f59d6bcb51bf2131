"""Padding ratio of length-bucketed token-budget batches on Multi30k train (target: under 5%).

Uses the default translation recipe's tokenization, so the lengths are those training sees.
Compares bucketed batches against the same budget filled in random order.
"""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.common import get_scale
from seqlab.config import load_recipe
from seqlab.data.sampler import BucketBatchSampler
from seqlab.tasks.translation import pair_lengths
from seqlab.tasks.translation_data import prepare

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "multi30k-gru-attention.toml"
TINY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "reverse.toml"


def pad_fraction(batches: list[list[int]], lengths: list[tuple[int, int]]) -> float:
    """Pad slots / all slots, over source and target tensors together."""
    real = padded = 0
    for batch in batches:
        for side in (0, 1):
            sizes = [lengths[i][side] for i in batch]
            real += sum(sizes)
            padded += max(sizes) * len(sizes)
    return 1.0 - real / padded


def random_batches(n: int, lengths, max_tokens: int, seed: int = 0) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    batches, batch, longest = [], [], 0
    for i in order:
        size = max(lengths[i])
        if batch and max(longest, size) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, size)
    return [*batches, batch] if batch else batches


def run(scale: str | None = None) -> dict:
    """Full/quick: Multi30k train; tiny: 300 synthetic `reverse` pairs (for tests)."""
    if get_scale(scale).real_data:
        recipe, corpus = load_recipe(RECIPE), "multi30k train (de-en, word tokens)"
        budgets: tuple[int, ...] = (2000, 4000, 8000)
    else:
        recipe = load_recipe(TINY_RECIPE, ["data.synthetic_size=300"])
        corpus, budgets = "synthetic reverse, 300 pairs", (200, 400)
    lengths = pair_lengths(prepare(recipe).splits["train"])
    results = {"corpus": corpus, "pairs": len(lengths), "runs": []}
    for max_tokens in budgets:
        bucketed = list(BucketBatchSampler(lengths, max_tokens=max_tokens, seed=recipe.seed))
        results["runs"].append(
            {
                "max_tokens": max_tokens,
                "batches": len(bucketed),
                "pad_fraction_bucketed": round(pad_fraction(bucketed, lengths), 4),
                "pad_fraction_random": round(
                    pad_fraction(random_batches(len(lengths), lengths, max_tokens), lengths), 4
                ),
            }
        )
    return results


def markdown(result: dict) -> str:
    rows = ["| max_tokens | batches | pad (bucketed) | pad (random order) |", "|---|---|---|---|"]
    for r in result["runs"]:
        rows.append(
            f"| {r['max_tokens']} | {r['batches']} | {r['pad_fraction_bucketed']:.2%} | "
            f"{r['pad_fraction_random']:.2%} |"
        )
    return "\n".join(rows)

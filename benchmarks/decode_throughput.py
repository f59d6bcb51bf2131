"""Decoding throughput: seqlab's search on its Transformer vs Hugging Face `generate` on Marian.

Both models have the multi30k-transformer recipe's size and random weights (eval mode), so
neither would stop at a meaningful point: every sentence is forced to exactly `decode_steps`
generated tokens, with EOS blocked until then (seqlab `min_len = max_len_b = steps`, HF
`min_new_tokens = max_new_tokens = steps`), and the outputs' lengths are checked. Timed: encoder +
search, from source ids to output ids, under `torch.inference_mode`. Modes: greedy and beam 5, at
batch 1 (sentences one at a time) and batch 64. Sources: Multi30k test2016 source sentences in
the recipe's tokenization (synthetic at tiny scale), the same for both. HF generate runs with
its defaults besides those length settings (KV cache on, `early_stopping` False, no sampling).

seqlab is timed as `seqlab translate` runs it, through `optimize_for_inference` (its CPU
speed-ups), and as the plain model ("seqlab, plain": every product `nn.Linear`'s, as in HF's model),
which measures what the transform is worth: `optimize_speedup`. On code from before that transform
(packing inside the layers, `seqlab.layers.linear.packing`), the same two cases are packing on and
off, so the file runs on both sides of that change.

Denormal floats are flushed to zero while this runs (`torch.set_flush_denormal`), for both. With
random weights seqlab's tied logits spread widely (std ~16), and `log_softmax` then makes many
exp() results denormal, which x86 CPUs compute about 4x slower; HF's random Marian (init std 0.02)
has tiny logits and never does. A trained model's logits do not reach that range either, so
without the flush the comparison would measure an artefact of random weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable

import torch
from torch import nn

from benchmarks import baselines
from benchmarks.common import (
    RECIPES,
    Scale,
    clock,
    device,
    get_scale,
    interleaved,
    paired_ratio,
    rate,
    set_threads,
    transformers_or_none,
)
from benchmarks.data import decode_sources
from benchmarks.train_throughput import TINY
from seqlab.config import load_recipe
from seqlab.data.batch import collate
from seqlab.decoding.search import beam_search, greedy_search
from seqlab.models.transformer import build_transformer

try:
    from seqlab.inference.optimize import optimize_for_inference
except ImportError:  # before issue 19: packing inside the layers, switched by a context manager
    optimize_for_inference = None

RECIPE = "multi30k-transformer"
BOS, EOS = 2, 3  # seqlab's fixed special ids, given to the Marian config as well
MODES = (("greedy", 1, 1), ("greedy", 1, 64), ("beam", 5, 1), ("beam", 5, 64))
PLAIN = "seqlab, plain"  # the same search on the model without `optimize_for_inference`


def _config(scale: Scale):
    if scale.tiny_models:
        return TINY["transformer"]
    return load_recipe(RECIPES / f"{RECIPE}.toml").model.config


def _groups(sources: list[list[int]], batch: int, count: int) -> list:
    """`count` padded source batches of `batch` rows: (src (B, S), src_mask (B, S))."""
    groups = []
    for i in range(count):
        rows = sources[i * batch : (i + 1) * batch]
        b = collate([(s, []) for s in rows])
        groups.append((b.src.to(device()), b.src_mask.to(device())))
    return groups


def _speedups(optimized: bool):
    """The context a case runs in: nothing, or (old code) its layers' packing on or off."""
    if optimize_for_inference is not None:
        return contextlib.nullcontext()
    from seqlab.layers.linear import packing

    return packing(optimized)


def _seqlab(
    model: nn.Module, groups: list, beam: int, steps: int, optimized: bool = True
) -> Callable[[], None]:
    if optimized and optimize_for_inference is not None:
        model = optimize_for_inference(model)

    def run() -> None:
        for src, mask in groups:
            with torch.inference_mode(), _speedups(optimized):
                encoded = model.encode(src, mask)
                search = dict(bos_id=BOS, eos_id=EOS, max_len_b=steps, min_len=steps)
                if beam == 1:
                    hyps = greedy_search(model.decoder, encoded, **search)
                else:
                    hyps = beam_search(model.decoder, encoded, beam_size=beam, **search)
            assert all(len(h[0].tokens) == steps for h in hyps), "seqlab: wrong output length"

    return run


def _hf(model: nn.Module, groups: list, beam: int, steps: int) -> Callable[[], None]:
    def run() -> None:
        for src, mask in groups:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=src,
                    attention_mask=mask.long(),
                    num_beams=beam,
                    do_sample=False,
                    max_new_tokens=steps,
                    min_new_tokens=steps,
                )
            assert out.shape == (src.size(0), steps + 1), "HF: wrong output length"

    return run


@functools.cache
def _models(scale: Scale) -> tuple[nn.Module, nn.Module | None, int]:
    transformers = transformers_or_none()
    _, vocab, _ = decode_sources(RECIPE, scale, 1, device())
    config = _config(scale)
    torch.manual_seed(0)
    ours = build_transformer(config, vocab, vocab).to(device()).eval()
    if transformers is None:
        return ours, None, vocab
    transformers.logging.set_verbosity_error()
    theirs = baselines.marian(transformers, config, vocab).to(device()).eval()
    return ours, theirs, vocab


def run(scale: str | None = None) -> dict:
    """seqlab vs HF for every mode of `MODES` at `scale` (see `benchmarks.common.SCALES`)."""
    chosen, threads = get_scale(scale), set_threads()
    flushed = torch.set_flush_denormal(True)
    try:
        return _run(chosen, threads, flushed)
    finally:
        torch.set_flush_denormal(False)


def _run(chosen: Scale, threads: int, flushed: bool) -> dict:
    ours, theirs, _ = _models(chosen)
    steps = chosen.decode_steps
    count = max(chosen.decode_sentences, 64 * chosen.decode_batches)
    sources, _, where = decode_sources(RECIPE, chosen, count, device())
    result = {
        "scale": chosen.name,
        "threads": threads,
        "sources": where,
        "forced_steps": steps,
        "denormals_flushed": flushed,
        "config": dataclasses.asdict(_config(chosen)),
        "skipped": [] if theirs else ["hf generate: transformers not installed"],
        "modes": [],
    }
    result["clock"] = clock()
    for mode, beam, batch in MODES:
        count = chosen.decode_sentences if batch == 1 else chosen.decode_batches
        groups = _groups(sources, batch, count)
        cases = {
            "seqlab": _seqlab(ours, groups, beam, steps),
            PLAIN: _seqlab(ours, groups, beam, steps, optimized=False),
        }
        if theirs is not None:
            cases["hf generate"] = _hf(theirs, groups, beam, steps)
        timings = interleaved(cases, chosen.decode_repeats, f"{mode} {beam} x batch {batch}")
        times = timings.times
        sentences = batch * len(groups)
        entry = {"mode": mode, "beam": beam, "batch": batch, "sentences": sentences}
        for case, seconds in times.items():
            entry[case] = {
                "times_s": seconds,
                "wall_s": timings.wall[case],
                "sentences_per_s": rate(sentences, seconds),
                "tokens_per_s": rate(sentences * steps, seconds),
            }
        entry["optimize_speedup"] = paired_ratio(times["seqlab"], times[PLAIN])
        if theirs is not None:
            entry["seqlab_speedup"] = paired_ratio(times["seqlab"], times["hf generate"])
        result["modes"].append(entry)
    return result


def markdown(result: dict) -> str:
    rows = [
        f"| search | batch | model | sentences/s | tokens/s | {result['clock']} seconds per "
        "repetition | "
        "seqlab speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["modes"]:
        search = "greedy" if e["beam"] == 1 else f"beam {e['beam']}"
        speedups = {
            "seqlab": 1.0,
            PLAIN: e["optimize_speedup"],
            "hf generate": e.get("seqlab_speedup"),
        }
        for case, speedup in speedups.items():
            if case not in e:
                continue
            c = e[case]
            times = ", ".join(f"{t:.2f}" for t in c["times_s"])
            speedup = f"{speedup:.2f}x"
            rows.append(
                f"| {search} | {e['batch']} | {case} | {c['sentences_per_s']:,.1f} | "
                f"{c['tokens_per_s']:,.0f} | {times} | {speedup} |"
            )
    return "\n".join(rows)

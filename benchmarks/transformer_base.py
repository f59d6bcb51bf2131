"""Transformer-base training throughput and model FLOPs utilisation; beam-5 decoding speed.

The GPU figures of the speed issue, run on a GPU with `make bench-gpu` (`python -m benchmarks
transformer_base`); the tests run it at tiny scale on CPU. Results: benchmarks/results/
transformer_base.json, with the device's name.

Training. Transformer-base (Vaswani et al. 2017, table 3: 6 + 6 layers, d_model 512, 8 heads,
d_ff 2048, dropout 0.1, post-LN, sinusoidal positions) with one 32,000-entry vocabulary shared
by source, target and output layer, on synthetic sentence pairs of 10-50 tokens per side (about
WMT's sentence lengths; random ids, since throughput does not depend on them), bucketed by
seqlab's `BucketBatchSampler` into batches of at most `max_tokens` padded tokens per side (the
paper's batches held about 25,000 of each). A step is what `seqlab train` runs: forward under
bf16 autocast, label-smoothed (0.1) cross-entropy over real target tokens, backward, clipping at
1.0, fused AdamW. Cases: eager, and with `torch.compile` (GPU only). Timed after warm-up steps,
with the device synchronised; tokens/s counts real target tokens.

Model FLOPs utilisation (MFU; Chowdhery et al. 2022, appendix B) is the model FLOPs of the timed
steps per second over the device's dense bf16 peak (`PEAK_BF16`, from the vendors' datasheets;
`SEQLAB_PEAK_TFLOPS` overrides it). Model FLOPs of a training step are 3 x the forward's
(backward costs twice the forward), counted on real tokens only, so padding is wasted work, not
credit: every matrix product of the layers and of the output projection, and attention's scores
and weighted sums over each sentence's real lengths (the full square for causal self-attention,
as torch's FLOP counter counts SDPA). `forward_flops` equals what `torch.utils.flop_counter`
counts on an unpadded batch (tests/test_benchmarks.py).

Decoding. Beam 5 over Multi30k test2016 with a trained checkpoint (`SEQLAB_BENCH_CHECKPOINT`,
default runs/multi30k-transformer/best.pt, what `make train-transformer` writes) on the source
file `SEQLAB_BENCH_SOURCES` (default: test2016's German side in the corpus mirror), through
`Translator.translate`, as `seqlab translate` does; sentences/s over the whole file after a
warm-up batch. Skipped, with the reason, when either file is missing.

On a lent GPU machine with no network and its own PyTorch (none of `make install`), carry the
checkpoint without its optimizer state and the sources, then run this and the GPU tests with
`benchmarks/gpu_check.sh`:

    seqlab average --weights-only runs/multi30k-transformer/best.pt -o .gpu/transformer.pt  # 25 MB
    cp "$SEQLAB_CORPUS_MIRROR/multi30k/test_2016_flickr.de.gz" .gpu/  # .gpu/ in .git/info/exclude
    bash benchmarks/gpu_check.sh "$OUT"  # there, carrying .gpu

Neither needs `datasets` (the recipe test in test_gpu.py skips without it).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import ROOT, Scale, count_parameters, device, get_scale, synchronize
from seqlab.data.batch import Batch, collate
from seqlab.data.sampler import BucketBatchSampler
from seqlab.execution import autocast_context, compile_model
from seqlab.losses import real_positions, token_cross_entropy
from seqlab.models.transformer import TransformerConfig, build_transformer
from seqlab.optim import build_optimizer

VOCAB = 32000
LENGTHS = (10, 50)  # tokens per side of a synthetic sentence, uniform
SPECIALS = 4  # <pad> <unk> <bos> <eos>: never drawn as sentence tokens
BASE = TransformerConfig(
    d_model=512,
    num_heads=8,
    num_encoder_layers=6,
    num_decoder_layers=6,
    d_ff=2048,
    dropout=0.1,
    norm_first=False,
    max_len=256,
    share_embeddings=True,
    tie_output=True,
)
TINY = dataclasses.replace(
    BASE, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32
)
# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' datasheets (SXM parts).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
# scale -> (max_tokens per side, sentence pairs, warm-up steps, timed steps)
SIZES = {"full": (25000, 24000, 10, 30), "quick": (12000, 6000, 5, 10), "tiny": (200, 64, 1, 2)}
PEAK_ENV, CHECKPOINT_ENV, SOURCES_ENV = (
    "SEQLAB_PEAK_TFLOPS",
    "SEQLAB_BENCH_CHECKPOINT",
    "SEQLAB_BENCH_SOURCES",
)


def forward_flops(config: TransformerConfig, vocab: int, pairs: list[tuple[int, int]]) -> int:
    """Forward FLOPs (2 per multiply-add) of the Transformer `config` on sentence pairs of
    (source tokens, target tokens) real lengths, EOS / BOS included.

    Per layer and token: attention projections (4 d^2 multiply-adds), cross-attention query and
    output (2 d^2) and keys/values over the source (2 d^2 per source token), feed-forward
    (2 d d_ff). Per layer and sentence: attention scores and weighted sums, 2 d per query-key pair.
    Per target token: the output projection, d V. Embeddings, norms, softmax and the loss are
    not counted (they are not matrix products; the usual convention).
    """
    d, ff = config.d_model, config.d_ff
    enc, dec = config.num_encoder_layers, config.num_decoder_layers
    macs = 0
    for s, t in pairs:
        macs += enc * (s * (4 * d * d + 2 * d * ff) + 2 * s * s * d)
        macs += dec * (t * (6 * d * d + 2 * d * ff) + 2 * s * d * d + 2 * t * t * d + 2 * t * s * d)
        macs += t * d * vocab
    return 2 * macs


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of `device_name` (FLOP/s), `SEQLAB_PEAK_TFLOPS` if set; None if
    unknown (then no MFU is reported)."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e12
    for name, peak in PEAK_BF16.items():
        if name in device_name:
            return peak
    return None


def synthetic_batches(scale: Scale, vocab: int, where: torch.device) -> list[Batch]:
    """Length-bucketed batches of random sentence pairs (seeded), as training would see them."""
    max_tokens, count, _, _ = SIZES[scale.name]
    rng = random.Random(0)
    low, high = (3, 12) if scale.tiny_models else LENGTHS

    def sentence() -> list[int]:
        return [rng.randrange(SPECIALS, vocab) for _ in range(rng.randint(low, high))]

    pairs = [(sentence(), sentence()) for _ in range(count)]
    lengths = [(len(s) + 1, len(t) + 1) for s, t in pairs]
    sampler = BucketBatchSampler(lengths, max_tokens=max_tokens, shuffle=True, seed=0)
    return [collate([pairs[i] for i in indices]).to(where) for indices in sampler]


def batch_pairs(batch: Batch) -> list[tuple[int, int]]:
    """Real (source, target) lengths of every pair of `batch`, EOS / BOS included."""
    src = batch.src_mask.sum(1).tolist()
    tgt = batch.tgt_mask.sum(1).tolist()
    return list(zip(src, tgt, strict=True))


def _train_steps(model: nn.Module, batches: list[Batch], precision: str) -> Callable[[int], None]:
    """`run(n)`: n training steps, cycling through `batches`."""
    where = next(model.parameters()).device
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.0, fused=True)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    position = [0]

    def run(steps: int) -> None:
        for _ in range(steps):
            batch = batches[position[0] % len(batches)]
            position[0] += 1
            optimizer.zero_grad(set_to_none=True)
            rows = real_positions(batch.tgt_mask)  # (N,): logits at real tokens, as seqlab train
            with autocast_context(precision, where):
                logits = model(batch.src, batch.src_mask, batch.tgt_in, rows)  # (N, V)
            targets = batch.tgt_out.flatten().index_select(0, rows)
            loss = token_cross_entropy(logits, targets, label_smoothing=0.1).sum()
            (loss / batch.num_tokens).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

    return run


def _training_case(
    config: TransformerConfig,
    vocab: int,
    batches: list[Batch],
    scale: Scale,
    precision: str,
    compiled: bool,
) -> dict:
    _, _, warmup, timed = SIZES[scale.name]
    torch.manual_seed(0)
    model = build_transformer(config, vocab, vocab).to(device())
    forward_model = compile_model(model, compiled)
    run = _train_steps(forward_model, batches, precision)
    run(warmup)  # compiles, if at all, here
    synchronize()
    start = time.perf_counter()
    run(timed)
    synchronize()
    seconds = time.perf_counter() - start
    used = [batches[i % len(batches)] for i in range(warmup, warmup + timed)]
    tokens = sum(b.num_tokens for b in used)
    flops = 3 * sum(forward_flops(config, vocab, batch_pairs(b)) for b in used)
    padded = sum(b.tgt_in.numel() for b in used)
    return {
        "params": count_parameters(model),
        "steps": timed,
        "seconds": round(seconds, 3),
        "target_tokens_per_s": round(tokens / seconds, 1),
        "target_padding": round(1 - tokens / padded, 3),
        "model_flops": flops,
        "model_tflops_per_s": round(flops / seconds / 1e12, 3),
    }


def _sources() -> Path | None:
    if os.environ.get(SOURCES_ENV):
        return Path(os.environ[SOURCES_ENV])
    mirror = os.environ.get("SEQLAB_CORPUS_MIRROR")
    return Path(mirror) / "multi30k" / "test_2016_flickr.de.gz" if mirror else None


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def decoding(beam: int = 5, batch_size: int = 128) -> dict:
    """Beam search over the test2016 sources with the trained checkpoint: sentences/s."""
    from seqlab.inference import Translator

    checkpoint = Path(os.environ.get(CHECKPOINT_ENV, ROOT / "runs/multi30k-transformer/best.pt"))
    sources = _sources()
    if not checkpoint.is_file():
        return {"skipped": f"no checkpoint at {checkpoint} (set {CHECKPOINT_ENV})"}
    if sources is None or not sources.is_file():
        return {"skipped": f"no source file at {sources} (set {SOURCES_ENV})"}
    translator = Translator.from_checkpoint(checkpoint, device())
    lines = _read_lines(sources)
    translator.translate(lines[:batch_size], beam_size=beam, batch_size=batch_size)  # warm-up
    synchronize()
    start = time.perf_counter()
    out = translator.translate(lines, beam_size=beam, batch_size=batch_size)
    synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(hyps[0].tokens) + 1 for hyps in out if hyps)
    return {
        "checkpoint": str(checkpoint),
        "sources": str(sources),
        "sentences": len(lines),
        "beam": beam,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "sentences_per_s": round(len(lines) / seconds, 1),
        "target_tokens_per_s": round(tokens / seconds, 1),
    }


def run(scale: str | None = None) -> dict:
    chosen = get_scale(scale)
    config = TINY if chosen.tiny_models else BASE
    on_gpu = device().type == "cuda"
    precision = "bf16" if on_gpu else "fp32"
    vocab = 50 if chosen.tiny_models else VOCAB
    batches = synthetic_batches(chosen, vocab, device())
    name = torch.cuda.get_device_name() if on_gpu else "cpu"
    peak = peak_flops(name)
    cases = {}
    for label, compiled in (("eager", False), ("compile", True)):
        if compiled and not on_gpu:
            continue  # compiling on CPU takes longer than this benchmark; CPU tests cover it
        case = _training_case(config, vocab, batches, chosen, precision, compiled)
        if peak is not None:
            case["mfu"] = round(case["model_flops"] / case["seconds"] / peak, 3)
        cases[label] = case
    return {
        "scale": chosen.name,
        "config": dataclasses.asdict(config),
        "vocab": vocab,
        "precision": precision,
        "batches": f"synthetic pairs, {LENGTHS} tokens a side, max_tokens {SIZES[chosen.name][0]}",
        "peak_bf16_tflops": None if peak is None else peak / 1e12,
        "training": cases,
        "decoding": decoding() if not chosen.tiny_models else {"skipped": "tiny scale"},
    }


def markdown(result: dict) -> str:
    rows = [
        "| case | params | target tokens/s | model TFLOP/s | MFU | padding |",
        "|---|---|---|---|---|---|",
    ]
    for label, c in result["training"].items():
        mfu = f"{c['mfu']:.1%}" if "mfu" in c else "n/a"
        rows.append(
            f"| {label} ({result['precision']}) | {c['params'] / 1e6:.1f}M | "
            f"{c['target_tokens_per_s']:,.0f} | {c['model_tflops_per_s']:.1f} | {mfu} | "
            f"{c['target_padding']:.1%} |"
        )
    d = result["decoding"]
    if "skipped" in d:
        rows.append(f"\nDecoding: skipped ({d['skipped']}).")
    else:
        rows.append(
            f"\nBeam {d['beam']} over {d['sentences']} test2016 sentences: "
            f"{d['sentences_per_s']:,.1f} sentences/s ({d['target_tokens_per_s']:,.0f} tokens/s)."
        )
    return "\n".join(rows)

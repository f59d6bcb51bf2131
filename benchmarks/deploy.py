"""Deployment: `seqlab translate` as whole commands, PyTorch against its CTranslate2 exports.

Beam-5 translation of Multi30k test2016 (de->en) by a trained checkpoint, each case one fresh
`python -m seqlab translate MODEL -i SRC -o OUT --beam-size 5 --threads N` process, so its time
includes start-up and model loading (what a user waits for), beside its BLEU (sacrebleu, against
the references) and its peak memory (the child's own peak resident set size, VmHWM).
Cases: the checkpoint on PyTorch (`optimize_for_inference`, as `translate` runs it), its
CTranslate2 export in float32 and in int8, each at 1 and 2 threads (PyTorch: intra-op threads;
CTranslate2: batches in parallel, one thread each). Each case also reports the share of lines
identical to PyTorch's, under beam 5 and (one untimed greedy run per engine) greedy search.
Repetitions are interleaved (each repetition runs every case once, in an order rotated by one),
and the median wall time is reported; the speed-up is PyTorch's time over each case's, per
repetition, then the median. Note that a recipe with the `gnmt` length penalty decodes beam
search slightly differently on CTranslate2 (docs/deploy.md): its beam agreement is lower.

The checkpoint is $SEQLAB_BENCH_CHECKPOINT, default runs/multi30k-transformer/best.pt (from
`make train-transformer`); without it the benchmark is skipped with a message. Exports go to a
temporary folder. Scales: full (all 1,000 lines, 3 repetitions), quick (the first 200 lines, 1
repetition); the tests call `run(..., checkpoint=, sources=, references=)` on a tiny model.
`python -m benchmarks deploy` (or `--quick deploy`) runs it; `python -m benchmarks.deploy
--checkpoint CKPT [--quick]` too.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, get_scale

CHECKPOINT_ENV = "SEQLAB_BENCH_CHECKPOINT"
DEFAULT_CHECKPOINT = ROOT / "runs" / "multi30k-transformer" / "best.pt"
SRC_LANG, TGT_LANG, SPLIT = "de", "en", "test_2016_flickr"
BEAM = 5
THREADS = (1, 2)
LINES = {"full": None, "quick": 200, "tiny": 20}
REPEATS = {"full": 3, "quick": 1, "tiny": 1}


def test2016(limit: int | None) -> tuple[list[str], list[str]]:
    """Multi30k test2016 sources (de) and references (en), the first `limit` lines."""
    from seqlab.data.corpus import fetch_corpus
    from seqlab.data.readers import read_lines

    folder = fetch_corpus("multi30k", progress=False)
    src = list(read_lines(folder / f"{SPLIT}.{SRC_LANG}"))
    ref = list(read_lines(folder / f"{SPLIT}.{TGT_LANG}"))
    return src[:limit], ref[:limit]


# `python -m seqlab ARGS` that, on exit, writes its peak resident set size (VmHWM, KiB) to
# $SEQLAB_PEAK_FILE. The child's own VmHWM, not `os.wait4`'s ru_maxrss: a forked child's
# ru_maxrss also counts the pages it shared with this (torch-loaded) parent before its exec.
RUN_SEQLAB = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as status:
        kib = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "0")
    with open(os.environ["SEQLAB_PEAK_FILE"], "w") as out:
        out.write(kib)
atexit.register(peak)
sys.argv[0] = "seqlab"
runpy.run_module("seqlab", run_name="__main__", alter_sys=True)
"""


def command(model: Path, source: Path, output: Path, threads: int, beam: int = BEAM) -> list[str]:
    return [
        sys.executable, "-c", RUN_SEQLAB, "translate", str(model), "-i", str(source),
        "-o", str(output), "--beam-size", str(beam), "--threads", str(threads), "-q",
    ]  # fmt: skip


def greedy_agreement(models: dict, source: Path, tmp: Path) -> dict[str, float]:
    """Share of lines whose greedy output equals PyTorch's, per engine (untimed, 2 threads)."""
    outputs = {}
    for n, (engine, model) in enumerate(models.items()):
        out = tmp / f"greedy-{n}.txt"
        timed(command(model, source, out, max(THREADS), beam=1), max(THREADS))
        outputs[engine] = out.read_text(encoding="utf-8").splitlines()
    baseline = outputs["seqlab (PyTorch)"]
    return {engine: agreement(hyps, baseline) for engine, hyps in outputs.items()}


def agreement(hyps: list[str], baseline: list[str]) -> float:
    return round(sum(a == b for a, b in zip(hyps, baseline)) / max(len(hyps), 1), 4)


def timed(argv: list[str], threads: int) -> tuple[float, float | None]:
    """Run `argv` (a `command`) once: (wall seconds, the child's peak RSS in MiB, None where
    /proc is missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        env["SEQLAB_PEAK_FILE"] = str(peak_file)
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"seqlab {' '.join(argv[3:])} failed ({done.returncode}): {stderr}")
        text = peak_file.read_text() if peak_file.is_file() else "0"
    return seconds, (int(text) / 1024 if int(text) else None)


def export(checkpoint: Path, folder: Path, quantization: str | None) -> Path:
    argv = [sys.executable, "-m", "seqlab", "export", str(checkpoint), str(folder)]
    argv += ["--format", "ctranslate2", "-q"]
    if quantization:
        argv += ["--quantization", quantization]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True)
    return folder


def run(
    scale: str | None = None,
    *,
    checkpoint: str | Path | None = None,
    sources: list[str] | None = None,
    references: list[str] | None = None,
) -> dict:
    """Time every case; `sources` / `references` default to Multi30k test2016."""
    from seqlab.evaluation.bleu import corpus_scores

    name = get_scale(scale).name
    if checkpoint is None and name == "tiny":  # the tests' scale: only on the model they give
        message = "tiny scale runs only on a checkpoint given to run(checkpoint=...)"
        return {"skipped": message, "checkpoint": None}
    checkpoint = Path(checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT)
    if not checkpoint.is_file() and not checkpoint.is_dir():
        message = (
            f"no checkpoint at {checkpoint}: run `make train-transformer` or set {CHECKPOINT_ENV}"
        )
        print(f"deploy: skipped: {message}", file=sys.stderr)
        return {"skipped": message, "checkpoint": str(checkpoint)}
    if sources is None:
        sources, references = test2016(LINES[name])
    with tempfile.TemporaryDirectory(prefix="seqlab-deploy-") as tmp:
        tmp = Path(tmp)
        source = tmp / "src.txt"
        source.write_text("".join(line + "\n" for line in sources), encoding="utf-8")
        models = {
            "seqlab (PyTorch)": checkpoint,
            "CTranslate2 float32": export(checkpoint, tmp / "float32", None),
            "CTranslate2 int8": export(checkpoint, tmp / "int8", "int8"),
        }
        cases = [(engine, threads) for threads in THREADS for engine in models]
        times: dict = {case: [] for case in cases}
        peaks: dict = {case: [] for case in cases}
        outputs: dict = {}
        for rep in range(REPEATS[name]):
            for k in range(len(cases)):
                case = cases[(k + rep) % len(cases)]
                out = tmp / f"out-{cases.index(case)}.txt"
                seconds, peak = timed(command(models[case[0]], source, out, case[1]), case[1])
                times[case].append(seconds)
                if peak is not None:
                    peaks[case].append(round(peak, 1))
                outputs[case] = out.read_text(encoding="utf-8").splitlines()
        greedy = greedy_agreement(models, source, tmp)
    rows = []
    for engine, threads in cases:
        reference_times = times[("seqlab (PyTorch)", threads)]
        hyps = outputs[(engine, threads)]
        scores = corpus_scores(hyps, list(references or []), tok_lc=True) if references else {}
        baseline = outputs[("seqlab (PyTorch)", threads)]
        rows.append(
            {
                "engine": engine,
                "threads": threads,
                "times_s": [round(t, 3) for t in times[(engine, threads)]],
                "median_s": round(statistics.median(times[(engine, threads)]), 3),
                "speedup": round(
                    statistics.median(
                        a / b for a, b in zip(reference_times, times[(engine, threads)])
                    ),
                    2,
                ),
                "peak_mib": max(peaks[(engine, threads)], default=None),
                "bleu": round(scores["bleu"]["score"], 2) if scores else None,
                "same_as_pytorch": agreement(hyps, baseline),
                "greedy_same_as_pytorch": greedy[engine],
            }
        )
    return {
        "checkpoint": str(checkpoint),
        "sentences": len(sources),
        "beam_size": BEAM,
        "repeats": REPEATS[name],
        "clock": "wall",
        "cases": rows,
    }


def markdown(result: dict) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    rows = [
        f"Beam {result['beam_size']}, {result['sentences']} sentences, whole commands "
        f"(start-up and model load included), median of {result['repeats']}.",
        "",
        "| engine | threads | time (s) | speed-up | BLEU | same as PyTorch (beam, greedy) "
        "| peak memory (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["cases"]:
        bleu = "" if r["bleu"] is None else f"{r['bleu']:.2f}"
        rows.append(
            f"| {r['engine']} | {r['threads']} | {r['median_s']:.2f} | {r['speedup']:.2f}x | "
            f"{bleu} | {r['same_as_pytorch']:.1%}, {r['greedy_same_as_pytorch']:.1%} | "
            f"{'' if r['peak_mib'] is None else round(r['peak_mib'])} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__)
    parser.add_argument("--checkpoint", help=f"default: ${CHECKPOINT_ENV} or {DEFAULT_CHECKPOINT}")
    parser.add_argument("--quick", action="store_const", const="quick", dest="scale")
    args = parser.parse_args()
    result = run(args.scale, checkpoint=args.checkpoint)
    print(json.dumps(result, indent=2))
    print(markdown(result))

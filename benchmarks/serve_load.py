"""Load on `seqlab serve`: requests/s and p50/p95 latency at concurrency 1, 8 and 32, with dynamic
batching on and off.

The real server runs as a subprocess on 127.0.0.1 (`python -m seqlab serve MODEL --threads T`, T
from $SEQLAB_BENCH_THREADS, default 1; batching off is `--no-batching`). A client in this process
(asyncio + httpx) keeps C requests in flight until N are answered: each request is one sentence,
Multi30k test2016 German sources in corpus order, translated with the model's default beam.
Latency is per request, from sending to the full response (wall clock); requests/s is N over
the wall time of the level; a few warm-up requests precede each level. Client and server share
the machine (the client is light next to translation, but on a 2-core machine it takes some CPU).

Model: $SEQLAB_BENCH_SERVE_MODEL, default runs/multi30k-transformer/best.pt (`make
train-transformer`), a checkpoint or an exported folder; skipped with a message when missing. At
tiny scale (what the tests run): a tiny reverse model trained on the spot and synthetic sentences.
`python -m benchmarks.serve_load [--quick|--tiny] [--model PATH]` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, SCALE_ENV, THREADS_ENV, get_scale

MODEL_ENV = "SEQLAB_BENCH_SERVE_MODEL"
DEFAULT_MODEL = ROOT / "runs" / "multi30k-transformer" / "best.pt"
CONCURRENCY = (1, 8, 32)
REQUESTS = {"full": 256, "quick": 64, "tiny": 32}  # timed requests per level
WARMUP = 4
MODES = {"batching on": [], "batching off": ["--no-batching"]}
# the tiny scale's model: the reverse recipe, shrunk (as the tests' tiny reverse run)
TINY_OVERRIDES = [
    "data.synthetic_size=300",
    "train.max_steps=6",
    "train.valid_every=6",
    "train.valid_max_sentences=10",
    "train.device='cpu'",
    "train.max_tokens=300",
    "model.hidden_size=16",
    "model.embed_dim=8",
]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(latencies: list[float], seconds: float) -> dict:
    """Requests/s and latency percentiles (ms) of one level."""
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": round(1000 * percentile(latencies, 50), 1),
        "p95_ms": round(1000 * percentile(latencies, 95), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1),
    }


async def load(url: str, sentences: list[str], concurrency: int, count: int) -> dict:
    """`count` requests of one sentence each, `concurrency` in flight; checked, then summarized."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(i: int) -> float:
            start = time.perf_counter()
            response = await client.post(
                "/translate", json={"text": [sentences[i % len(sentences)]]}
            )
            response.raise_for_status()
            assert len(response.json()["translations"]) == 1
            return time.perf_counter() - start

        async def worker(numbers: list[int], out: list[float]) -> None:
            for i in numbers:
                out.append(await one(i))

        await asyncio.gather(*(one(i) for i in range(WARMUP)))
        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(
            *(worker(list(range(w, count, concurrency)), latencies) for w in range(concurrency))
        )
        return summarize(latencies, time.perf_counter() - start)


class Server:
    """`python -m seqlab serve MODEL --port 0 OPTIONS`, up until `stop()`; stderr in a file."""

    def __init__(self, model: Path, threads: int, options: list[str], log: Path):
        self.log = log
        command = [sys.executable, "-m", "seqlab", "serve", str(model), "--port", "0", "-v"]
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                [*command, "--threads", str(threads), *options],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        self.url = self._wait_until_up()

    def _wait_until_up(self, timeout: float = 300.0) -> str:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"seqlab serve exited:\n{self.log.read_text()}")
            found = re.search(r"serving on (http://\S+)", self.log.read_text())
            if found:
                try:
                    httpx.get(f"{found.group(1)}/health", timeout=5).raise_for_status()
                    return found.group(1)
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"seqlab serve did not come up in {timeout:.0f} s")

    def batches(self) -> int:
        return len(re.findall(r"batch: \d+ lines", self.log.read_text()))

    def stop(self) -> int:
        self.process.terminate()  # SIGTERM: the graceful stop
        return self.process.wait(timeout=60)


def _sentences(tiny: bool) -> tuple[list[str], str]:
    if tiny:
        from seqlab.data.synthetic import synthetic_pairs

        pairs = synthetic_pairs("reverse", 200, seed=3)
        return [src for src, _ in pairs], "synthetic reverse-task sentences"
    from seqlab.data.corpus import corpus_path

    path = corpus_path("multi30k", "test_2016_flickr", "de", progress=False)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line], "Multi30k test2016 German sources, corpus order"


def _tiny_model(folder: Path) -> Path:
    from seqlab.config import load_recipe
    from seqlab.run import train_recipe

    train_recipe(load_recipe(ROOT / "recipes" / "reverse.toml", TINY_OVERRIDES), folder / "run")
    return folder / "run" / "best.pt"


def run(scale: str | None = None, model: str | Path | None = None) -> dict:
    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"{', '.join(missing)} not installed: pip install -e '.[serve,dev]'"
        print(f"serve_load: skipped: {message}", file=sys.stderr)
        return {"skipped": message}
    scale_ = get_scale(scale)
    threads = int(os.environ.get(THREADS_ENV, "1"))
    count = REQUESTS[scale_.name]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        if scale_.tiny_models:
            path, what = _tiny_model(Path(tmp)), "tiny reverse model (trained 6 steps)"
        else:
            path = Path(model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
            what = str(path)
            if not path.exists():
                message = f"no model at {path}: `make train-transformer`, or set {MODEL_ENV}"
                print(f"serve_load: skipped: {message}", file=sys.stderr)
                return {"skipped": message, "model": what}
        sentences, source = _sentences(scale_.tiny_models)
        modes = {}
        for mode, options in MODES.items():
            server = Server(path, threads, options, Path(tmp) / f"{len(modes)}.log")
            try:
                levels = {}
                for c in CONCURRENCY:
                    print(f"serve_load: {mode}, concurrency {c}", file=sys.stderr)
                    levels[str(c)] = asyncio.run(load(server.url, sentences, c, count))
                batches = server.batches()
            finally:
                code = server.stop()
            if code != 0:
                raise RuntimeError(f"seqlab serve exited {code} on SIGTERM")
            modes[mode] = {"levels": levels, "batches": batches}
    return {
        "model": what,
        "sentences": source,
        "requests_per_level": count,
        "warmup_requests": WARMUP,
        "server_threads": threads,
        "clock": "wall",
        "modes": modes,
    }


def markdown(result: dict) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    lines = [
        f"Model {result['model']}; {result['requests_per_level']} one-sentence requests per "
        f"level ({result['sentences']}); server on {result['server_threads']} thread(s).",
        "",
        "| concurrency | batching | requests/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for c in CONCURRENCY:
        for mode, entry in result["modes"].items():
            level = entry["levels"][str(c)]
            numbers = [level[key] for key in ("requests_per_s", "p50_ms", "p95_ms")]
            lines.append(f"| {c} | {mode.split()[-1]} | " + " | ".join(map(str, numbers)) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="scale")
    size.add_argument("--tiny", action="store_const", const="tiny", dest="scale")
    parser.add_argument("--model", help=f"checkpoint or exported folder (default {DEFAULT_MODEL})")
    args = parser.parse_args(argv)
    os.environ[SCALE_ENV] = get_scale(args.scale).name
    result = run(args.scale, args.model)
    print(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

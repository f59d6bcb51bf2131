"""Run every benchmark (`python -m benchmarks`) or the ones named (`python -m benchmarks padding`).

Each benchmark module has `run(scale) -> dict` and `markdown(result) -> str`; results land in
benchmarks/results/<name>.json (with the machine and versions) and a Markdown table of them is
printed on stdout. `--quick` runs fewer batches and repetitions, `--tiny` synthetic data and tiny
models (seconds of compute; what the tests run); `--out DIR` writes the JSON elsewhere. The GPU
benchmark (`transformer_base`: Transformer-base training MFU, beam-5 decoding of test2016) runs by
default only where CUDA is available; `make bench-gpu` runs it alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import SCALE_ENV, clock, get_scale, set_threads

BENCHMARKS = [
    "padding",
    "train_throughput",
    "decode_throughput",
    "precision",
    "prepare",
    "deploy",
    "serve_load",
]
# Run by default only where there is a GPU (Transformer-base trains for minutes a step on a CPU);
# by name anywhere (`python -m benchmarks --tiny transformer_base` is what the tests run).
GPU_BENCHMARKS = ["transformer_base"]
RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    try:
        import transformers

        hf = transformers.__version__
    except ImportError:
        hf = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": hf,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "clock": clock(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "date": time.strftime("%Y-%m-%d"),
    }


def run_one(name: str, scale: str, out: Path) -> dict:
    """Run benchmark `name`, write out/<name>.json, return the result."""
    module = importlib.import_module(f"benchmarks.{name}")
    print(f"== {name} ({scale})", file=sys.stderr)
    start = time.perf_counter()
    body = module.run(scale)
    result = {"benchmark": name, "environment": environment(), **body}
    if "clock" in body:  # a benchmark timing wall clock (whole commands, a server) says so
        result["environment"]["clock"] = body["clock"]
    result["environment"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    known = [*BENCHMARKS, *GPU_BENCHMARKS]
    parser.add_argument("names", nargs="*", choices=[[], *known], metavar="NAME")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="scale")
    size.add_argument("--tiny", action="store_const", const="tiny", dest="scale")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scale = get_scale(args.scale).name
    os.environ[SCALE_ENV] = scale
    set_threads()
    default = [*BENCHMARKS, *GPU_BENCHMARKS] if torch.cuda.is_available() else BENCHMARKS
    for name in args.names or default:
        result = run_one(name, scale, args.out)
        print(f"\n### {name}\n")
        print(importlib.import_module(f"benchmarks.{name}").markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Run every benchmark (`python -m benchmarks`) or the ones named (`python -m benchmarks padding`).

Each benchmark module has `run() -> dict`; results land in benchmarks/results/<name>.json
(with the machine and versions) and a Markdown table of them is printed on stdout.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

BENCHMARKS = ["padding"]
RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "date": time.strftime("%Y-%m-%d"),
    }


def main(names: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    for name in names or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", file=sys.stderr)
        result = {"benchmark": name, "environment": environment(), **module.run()}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(module.markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Training curves: a run's JSONL log (`seqlab.train`) drawn to a PNG with matplotlib.

matplotlib is the optional `plot` extra; without it `plot_curves` prints a note and draws nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def plot_curves(log_path: Path, out: Path) -> Path | None:
    """Training and validation curves from the JSONL log; None (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("no curves.png: install the 'plot' extra (pip install 'seqlab[plot]')")
        return None
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid_keys = sorted({k for r in records for k in r if k.startswith("valid_")})
    fig, axes = plt.subplots(1, 1 + len(valid_keys), figsize=(4 * (1 + len(valid_keys)), 3))
    axes = list(axes) if len(valid_keys) else [axes]
    axes[0].plot(*zip(*train), label="train loss") if train else None
    axes[0].set_xlabel("step")
    axes[0].set_title("train loss")
    for ax, key in zip(axes[1:], valid_keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), marker="o")
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

"""TensorBoard event files in a run folder: curves to watch live (`tensorboard --logdir runs`).

The trainer hands every record it logs (train loss, learning rate, gradient norm, tokens/s;
validation metrics) to an `EventLog` in the run folder, and the task's sample outputs as text.
TensorBoard is the optional `tensorboard` extra; without it `open_event_log` returns a `NoEventLog`
that drops everything, after saying once how to get the curves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# Record keys that are positions or counters, not curves.
NOT_CURVES = frozenset({"step", "epoch"})
_told_missing = False


class NoEventLog:
    """Takes the same calls as `EventLog` and writes nothing (TensorBoard is not installed)."""

    def scalars(self, step: int, values: Mapping[str, object]) -> None:
        pass

    def text(self, step: int, tag: str, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class EventLog(NoEventLog):
    """A `torch.utils.tensorboard.SummaryWriter` writing event files into `folder`."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, step: int, values: Mapping[str, object]) -> None:
        """Every finite number in `values` as a curve named by its key: `valid_bleu` is drawn
        as `valid/bleu`, a training key `loss` as `train/loss`."""
        for key, value in values.items():
            if key in NOT_CURVES or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tag(key: str) -> str:
    """The TensorBoard name of a record's key: `valid_bleu` -> `valid/bleu`, `lr` -> `train/lr`."""
    if key.startswith("valid_"):
        return "valid/" + key.removeprefix("valid_")
    return "train/" + key


def samples_markdown(samples: Sequence[tuple[str, str, str]]) -> str:
    """(source, hypothesis, reference) triples as a Markdown table for TensorBoard's text tab."""
    rows = ["| source | hypothesis | reference |", "|---|---|---|"]
    for triple in samples:
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in triple) + " |")
    return "\n".join(rows)


def open_event_log(folder: Path) -> NoEventLog:
    """An `EventLog` writing into `folder`, or a `NoEventLog` when TensorBoard is missing."""
    global _told_missing
    try:
        import tensorboard  # noqa: F401  (SummaryWriter needs it)
    except ImportError:
        if not _told_missing:
            logger.info(
                "no TensorBoard curves: pip install 'seqlab[tensorboard]', then "
                "`tensorboard --logdir runs` (log.jsonl and curves.png are written anyway)"
            )
            _told_missing = True
        return NoEventLog()
    return EventLog(folder)

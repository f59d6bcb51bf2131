"""Label sentences with a trained classifier: tokenize, batch by length, softmax, reorder.

`Classifier` is what `seqlab classify` runs, and what other projects use
(`Classifier.from_checkpoint(path).classify(lines)`). It keeps the contract of `seqlab translate`:
exactly one result per input line, in input order; an empty (or blank) line gives an empty result
(None), so outputs stay aligned with inputs. A sentence is encoded as in training
(`<cls> sentence <sep>`, truncated to the recipe's `data.max_len`), and the label is the
argmax of the classifier's softmax over the label names the checkpoint keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seqlab.checkpoint import load_model
from seqlab.data.bert_batch import collate_classification
from seqlab.data.sentence_pairs import pack_pair
from seqlab.data.tokenize import encode_text
from seqlab.data.vocab import Side

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The label of one sentence and the probability of every label (in `Classifier.labels`
    order), which sum to 1."""

    label: str
    probs: tuple[float, ...]


class Classifier:
    """Sentence classification with a `BertClassifier`-style model: `model(tokens, segments,
    mask) -> logits (B, C)`, C = len(labels)."""

    def __init__(self, model: nn.Module, side: Side, labels: Sequence[str], max_len: int):
        self.model, self.side, self.labels = model, side, tuple(labels)
        self.max_len = max_len

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Classifier:
        """The classifier of a `classification` checkpoint; its label names are the ones saved
        with it (older checkpoints without names: "0", "1", ...)."""
        loaded = load_model(path, device, task="classification")
        labels = loaded.extras.get("labels")
        if labels is None:
            num_classes = loaded.recipe.data.num_classes or 2
            labels = [str(i) for i in range(num_classes)]
        return cls(loaded.model, loaded.sides["src"], labels, loaded.recipe.data.max_len)

    def encode_line(self, line: str, number: int | None = None) -> list[int]:
        """`<cls> sentence <sep>` ids of one line, truncated to `max_len` (with a warning naming
        line `number`, as `seqlab translate` does); [] for a blank line."""
        if not line.strip():
            return []
        vocab = self.side.vocab
        ids = encode_text(self.side.tokenizer, vocab, line.strip())
        if len(ids) > self.max_len - 2:
            logger.warning(
                "input line %s has %d tokens; truncated to %d",
                "?" if number is None else number, len(ids), self.max_len - 2,
            )  # fmt: skip
        return pack_pair(ids[: self.max_len - 2], None, cls_id=vocab.cls_id, sep_id=vocab.sep_id)[0]

    @staticmethod
    def _batches(ids: list[list[int]], batch_size: int) -> Iterator[list[int]]:
        """Indices of the non-empty inputs, sorted by length, `batch_size` at a time."""
        order = sorted((i for i, x in enumerate(ids) if x), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def classify(self, lines: Sequence[str], batch_size: int = 64) -> list[Prediction | None]:
        """One `Prediction` per line, in order; None for an empty line. The model's train/eval
        mode is left as it was found."""
        ids = [self.encode_line(line, n) for n, line in enumerate(lines, 1)]
        results: list[Prediction | None] = [None] * len(lines)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for index in self._batches(ids, batch_size):
                    batch = collate_classification([(ids[i], 0) for i in index]).to(device)
                    logits = self.model(batch.tokens, batch.segments, batch.mask)  # (B, C)
                    probs = logits.float().softmax(-1).cpu()  # (B, C)
                    best = probs.argmax(-1).tolist()  # (B,)
                    for row, i in enumerate(index):
                        results[i] = Prediction(self.labels[best[row]], tuple(probs[row].tolist()))
        finally:
            self.model.train(was_training)
        return results

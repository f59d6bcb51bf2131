"""Translate text with a trained model: tokenize, batch by length, search, detokenize, reorder.

`Translator` is used by validation during training, by `seqlab translate` / `seqlab evaluate`, and
by other projects (`Translator.from_checkpoint(path).translate(lines)`). It keeps the contract of
the CLI: exactly one result per input line, in input order; an empty line gives an empty result;
a line longer than the model accepts is truncated with a warning on stderr.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from seqlab.checkpoint import load_model
from seqlab.config import DecodeConfig
from seqlab.data.batch import collate
from seqlab.data.vocab import Side
from seqlab.decoding.search import beam_search, greedy_search
from seqlab.inference.optimize import optimize_for_inference
from seqlab.inference.results import Translation, length_batches, source_ids

logger = logging.getLogger(__name__)


class Translator:
    """Search over a `Seq2Seq`-style model (`.encode`, `.decoder`) with source/target sides."""

    engine = "torch"  # `seqlab.inference.engines`: the CTranslate2 engine says "ctranslate2"

    def __init__(
        self,
        model: nn.Module,
        src: Side,
        tgt: Side,
        decode: DecodeConfig | None = None,
        optimize: bool = True,
    ):
        """`optimize`: search on CPU with `optimize_for_inference(model)` (the same outputs,
        faster; it shares the model's weights and leaves the model as it is)."""
        self.model, self.src, self.tgt = model, src, tgt
        self.decode = decode or DecodeConfig()
        self.max_source_len: int | None = getattr(model, "max_source_len", None)
        self.optimize = optimize
        self._optimized: nn.Module | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", optimize: bool = True
    ) -> Translator:
        loaded = load_model(path, device, task="translation")
        return cls(loaded.model, *loaded.sides.values(), loaded.recipe.decode, optimize)

    def _searched(self, device: torch.device) -> nn.Module:
        """The model search runs: on CPU (unless turned off) its optimized copy, made once."""
        if not self.optimize or device.type != "cpu":
            return self.model
        if self._optimized is None:
            self._optimized = optimize_for_inference(self.model)
        return self._optimized

    def encode_line(self, line: str, number: int) -> list[int]:
        return source_ids(self.src, line, number, self.max_source_len)

    def batches(self, ids: list[list[int]], batch_size: int, max_tokens: int | None):
        """Indices of non-empty inputs, sorted by length, cut into batches."""
        return length_batches(ids, batch_size, max_tokens)

    @torch.no_grad()
    def translate(
        self,
        lines: list[str],
        *,
        beam_size: int | None = None,
        nbest: int = 1,
        length_penalty: float | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        progress=None,
    ) -> list[list[Translation]]:
        """One list of up to `nbest` translations per input line (empty for an empty line)."""
        d = self.decode
        beam_size = beam_size or d.beam_size
        device = next(self.model.parameters()).device
        model = self._searched(device)
        was_training = model.training
        model.eval()
        ids = [self.encode_line(line, n) if line.strip() else [] for n, line in enumerate(lines, 1)]
        results: list[list[Translation]] = [[] for _ in lines]
        for batch in self.batches(ids, batch_size or d.batch_size, max_tokens):
            collated = collate(
                [(ids[i], []) for i in batch],
                pad_id=self.src.vocab.pad_id,
                eos_id=self.src.vocab.eos_id,
            ).to(device)
            encoded = model.encode(collated.src, collated.src_mask)
            hyps_of = self.search(encoded, beam_size, nbest, length_penalty, model)
            for i, hyps in zip(batch, hyps_of):
                results[i] = [self.detokenize(h) for h in hyps]
            if progress is not None:
                progress.update(len(batch))
        model.train(was_training)
        return results

    def search(
        self,
        encoded,
        beam_size: int,
        nbest: int,
        length_penalty: float | None,
        model: nn.Module | None = None,
    ):
        """Search over `encoded` with `model` (default: the translator's own)."""
        model = self.model if model is None else model
        d, vocab = self.decode, self.tgt.vocab
        common = {
            "bos_id": vocab.bos_id,
            "eos_id": vocab.eos_id,
            "max_len_a": d.max_len_a,
            "max_len_b": d.max_len_b,
            "max_len": getattr(self.model, "max_target_len", None),
        }
        if beam_size == 1 and nbest == 1:
            return greedy_search(model.decoder, encoded, **common)
        return beam_search(
            model.decoder,
            encoded,
            beam_size=beam_size,
            nbest=nbest,
            length_penalty=d.length_penalty if length_penalty is None else length_penalty,
            length_penalty_kind=d.length_penalty_kind,
            **common,
        )

    def detokenize(self, hyp) -> Translation:
        tokens = self.tgt.vocab.decode(list(hyp.tokens))
        return Translation(
            self.tgt.tokenizer.detokenize(tokens), float(hyp.score), tuple(hyp.tokens)
        )

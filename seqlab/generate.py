"""Text generation with a trained language model: prime on a prefix, then sample or go greedy.

`TextGenerator.from_checkpoint(path)` needs nothing but the checkpoint (recipe, weights,
tokenizer and vocabulary). The prefix is normalised and tokenized as the training text was; the
model reads it (after an `<eos>`, the start of a line, when the model was trained with
`line_break = "eos"`), and `seqlab.decoding.sample` (or `greedy_search`) continues from the state
it ends in, through the model's `Decoder` interface. A sample ends at `<eos>` (the end of a
line/paragraph) or after `max_len` tokens; at least one token is generated. Each result is the
prefix followed by its continuation, detokenized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seqlab.checkpoint import load_model
from seqlab.config import LanguageModelData
from seqlab.data.vocab import Side
from seqlab.decoding.search import greedy_search, sample
from seqlab.errors import ConfigError
from seqlab.tasks.language_model_data import normalise


@dataclass(frozen=True)
class GenerationSettings:
    """How to continue a prefix; `temperature = 0` means greedy (argmax) decoding."""

    max_len: int = 100
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num: int = 1
    seed: int | None = None

    def check(self) -> None:
        """ConfigError naming the CLI flag of a setting out of range."""
        if self.max_len < 1:
            raise ConfigError(f"--max-len must be at least 1, got {self.max_len}")
        if self.num < 1:
            raise ConfigError(f"--num must be at least 1, got {self.num}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")


class TextGenerator:
    """A language model with its tokenizer, vocabulary and data settings."""

    def __init__(self, model: nn.Module, side: Side, data: LanguageModelData):
        self.model, self.side, self.data = model.eval(), side, data

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> TextGenerator:
        loaded = load_model(path, device, task="language_model")
        return cls(loaded.model, loaded.sides["lm"], loaded.recipe.data)

    def context(self, prefix: str) -> tuple[list[str], list[int]]:
        """(prefix tokens as the tokenizer reads them, ids the model reads first)."""
        tokens = self.side.tokenizer.tokenize(normalise(self.data, prefix))
        start = [self.side.vocab.eos_id] if self.data.line_break == "eos" else []
        ids = start + self.side.vocab.encode(tokens)
        if not ids:
            raise ConfigError(
                "give a --prefix: this model was trained on running text (line_break = 'space') "
                "and has no start-of-text token"
            )
        return tokens, ids

    @torch.no_grad()
    def generate(self, prefix: str, settings: GenerationSettings) -> list[str]:
        """`settings.num` continuations of `prefix`, each as one line of text."""
        settings.check()
        tokens, ids = self.context(prefix)
        device = self.model.embedding.weight.device
        context = torch.tensor([ids], dtype=torch.long, device=device)  # (1, P)
        encoded = self.model.prime(context[:, :-1])
        common = {
            "bos_id": ids[-1],
            "eos_id": self.side.vocab.eos_id,
            "max_len_b": settings.max_len,
        }
        if settings.temperature == 0:
            hyps = greedy_search(self.model, encoded, min_len=1, **common)[0] * settings.num
        else:
            generator = None
            if settings.seed is not None:
                generator = torch.Generator(device).manual_seed(settings.seed)
            hyps = sample(
                self.model,
                encoded,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                num_samples=settings.num,
                generator=generator,
                min_len=1,
                **common,
            )[0]
        vocab, tokenizer = self.side.vocab, self.side.tokenizer
        return [tokenizer.detokenize(tokens + vocab.decode(h.tokens)) for h in hyps]

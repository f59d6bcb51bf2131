"""What a translation engine returns, and what every engine offers, kept free of torch so that
every engine (PyTorch or CTranslate2) and its callers can import them without paying for torch's
start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Translation:
    """One hypothesis: detokenized text, its search score and its target token ids."""

    text: str
    score: float
    tokens: tuple[int, ...]


class TranslationEngine(Protocol):
    """What `open_translator` returns: `Translator` (PyTorch) or `CTranslate2Translator`.

    Attributes:
        engine: "torch" or "ctranslate2".
        decode: the model's decoding defaults (`seqlab.config.DecodeConfig`: beam size, length
            penalty, output cap `max_len_a * len + max_len_b`, batch size).
    """

    engine: str
    decode: Any

    def translate(
        self,
        lines: list[str],
        *,
        beam_size: int | None = None,
        nbest: int = 1,
        length_penalty: float | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        progress: Any = None,
    ) -> list[list[Translation]]:
        """One list of up to `nbest` translations per input line, in input order (an empty
        list for an empty line)."""
        ...

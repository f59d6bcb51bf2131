"""What a translation engine returns, kept free of torch so that every engine (PyTorch or
CTranslate2) and its callers can import it without paying for torch's start-up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Translation:
    """One hypothesis: detokenized text, its search score and its target token ids."""

    text: str
    score: float
    tokens: tuple[int, ...]

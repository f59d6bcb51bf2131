"""The token <-> id table shared by every task: fixed special ids, built from counts, saved as JSON.

Every seqlab vocabulary starts with the same seven special tokens at ids 0..6 (`SPECIALS`), so
models can rely on `<pad>` being 0 and a SentencePiece model (trained with the same ids, see
`seqlab/data/tokenize.py`) can stand behind the same `Vocab` interface. `Vocab` only maps tokens to
ids and back: it adds no BOS/EOS (`collate` in `seqlab/data/batch.py` does that) and knows nothing
of how text was split into tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlab.data.atomic import atomic_file
from seqlab.errors import ConfigError, DataError

SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>")
PAD, UNK, BOS, EOS, MASK, CLS, SEP = SPECIALS

FORMAT = "seqlab-vocab"
VERSION = 1


class Vocab:
    """An immutable id -> token list whose first entries are `SPECIALS`.

    Args:
        tokens: the whole table in id order; must start with `SPECIALS` and hold no duplicate.

    Raises:
        DataError: the table does not start with `SPECIALS` or repeats a token (both named).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = tuple(tokens)
        head = tokens[: len(SPECIALS)]
        if head != SPECIALS:
            raise DataError(
                f"vocabulary must start with the specials {list(SPECIALS)}, got {list(head)}"
            )
        index: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise DataError(f"vocabulary token at id {i} is not a string: {token!r}")
            if token in index:
                raise DataError(f"vocabulary repeats the token {token!r} (ids {index[token]}, {i})")
            index[token] = i
        self._tokens = tokens
        self._index = index
        self._unk = index[UNK]

    @classmethod
    def build(
        cls, counts: Mapping[str, int], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """Specials, then tokens seen at least `min_freq` times, most frequent first.

        Ties are broken by the token string, so the result depends only on `counts`. Special strings
        found in `counts` keep their fixed ids and are not repeated.

        Args:
            counts: token -> number of occurrences (a `Counter` works).
            min_freq: smallest count a token needs to be kept.
            max_size: largest `len(vocab)`, specials included; None for no limit.

        Raises:
            ConfigError: `max_size` smaller than the number of specials, or `min_freq` < 1.
        """
        if max_size is not None and max_size < len(SPECIALS):
            raise ConfigError(
                f"max_vocab={max_size} leaves no room for the {len(SPECIALS)} specials"
            )
        if min_freq < 1:
            raise ConfigError(f"min_freq must be at least 1, got {min_freq}")
        specials = set(SPECIALS)
        kept = [(t, c) for t, c in counts.items() if c >= min_freq and t not in specials]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))
        words = [t for t, _ in kept]
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(SPECIALS + tuple(words))

    @property
    def tokens(self) -> tuple[str, ...]:
        """The table in id order."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def token_to_id(self, token: str) -> int:
        """The id of `token`, or `unk_id` when it is not in the table."""
        return self._index.get(token, self._unk)

    def id_to_token(self, i: int) -> str:
        """The token at id `i`; IndexError outside `[0, len)`."""
        if not 0 <= i < len(self._tokens):
            raise IndexError(f"token id {i} outside the vocabulary [0, {len(self._tokens)})")
        return self._tokens[i]

    pad_id = property(lambda self: 0, doc="Id of `<pad>` (always 0).")
    unk_id = property(lambda self: 1, doc="Id of `<unk>` (always 1).")
    bos_id = property(lambda self: 2, doc="Id of `<bos>` (always 2).")
    eos_id = property(lambda self: 3, doc="Id of `<eos>` (always 3).")
    mask_id = property(lambda self: 4, doc="Id of `<mask>` (always 4).")
    cls_id = property(lambda self: 5, doc="Id of `<cls>` (always 5).")
    sep_id = property(lambda self: 6, doc="Id of `<sep>` (always 6).")

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids, unknown tokens -> `unk_id`; no BOS/EOS is added."""
        get, unk = self._index.get, self._unk
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Tokens of `ids`.

        Args:
            ids: token ids (ints, or anything `int()` accepts such as 0-d tensors).
            strip_special: stop at the first `<eos>` and drop `<pad>` / `<bos>`; `<unk>` and the
                other specials are kept as their strings.
        """
        out: list[str] = []
        for raw in ids:
            i = int(raw)
            if strip_special:
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id):
                    continue
            out.append(self.id_to_token(i))
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON, atomically (`atomic_file`)."""
        path = Path(path)
        payload = {"format": FORMAT, "version": VERSION, "tokens": list(self._tokens)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            json.dump(payload, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a table written by `save`.

        Raises:
            DataError: naming `path`, when it is missing, not JSON, or not a seqlab vocabulary.
        """
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise DataError(f"{path}: no such vocabulary file") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a JSON vocabulary file ({e})") from e
        if not (
            isinstance(payload, dict)
            and payload.get("format") == FORMAT
            and isinstance(payload.get("tokens"), list)
        ):
            raise DataError(f"{path}: not a {FORMAT} file (no 'format'/'tokens' keys)")
        if payload.get("version") != VERSION:
            raise DataError(f"{path}: {FORMAT} version {payload.get('version')!r} unsupported")
        try:
            return cls(payload["tokens"])
        except DataError as e:
            raise DataError(f"{path}: {e}") from e


@dataclass(frozen=True)
class Side:
    """One language side: how text becomes tokens (`tokenizer`) and tokens ids (`vocab`)."""

    tokenizer: Any  # a seqlab.data.tokenize.Tokenizer
    vocab: Vocab

    def save(self, folder: str | os.PathLike, name: str) -> dict:
        """Write the side as files other tools read: `{name}_vocab.json` (`Vocab.save`),
        `{name}.tokenizer.json` (the tokenizer's settings) and, for SentencePiece, its model
        `{name}.spm.model`. Returns those settings and file names."""
        folder = Path(folder)
        config = self.tokenizer.config()
        self.vocab.save(folder / f"{name}_vocab.json")
        (folder / f"{name}.tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
        model_bytes = getattr(self.tokenizer, "model_bytes", None)
        model = None if model_bytes is None else f"{name}.spm.model"
        if model is not None:
            (folder / model).write_bytes(model_bytes)
        return {"tokenizer": config, "vocab": f"{name}_vocab.json", "model": model}

    @classmethod
    def load(cls, folder: str | os.PathLike, name: str) -> Side:
        """The side `save(folder, name)` wrote.

        Raises:
            DataError: a file is missing or unreadable (naming it).
        """
        from seqlab.data.tokenize import tokenizer_from_config

        folder = Path(folder)
        config_path, model_path = folder / f"{name}.tokenizer.json", folder / f"{name}.spm.model"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"{config_path}: unreadable tokenizer settings ({error})") from error
        model = model_path.read_bytes() if model_path.is_file() else None
        return cls(tokenizer_from_config(config, model), Vocab.load(folder / f"{name}_vocab.json"))

    def to_payload(self) -> dict:
        """The side as checkpoint-safe values: the tokenizer's settings (JSON), its model bytes
        (a SentencePiece model, as a uint8 tensor) and the vocabulary's tokens."""
        import torch

        model = getattr(self.tokenizer, "model_bytes", None)
        if model is not None:
            model = torch.frombuffer(bytearray(model), dtype=torch.uint8)
        tokenizer = json.dumps(self.tokenizer.config())
        return {"tokenizer": tokenizer, "model": model, "vocab": list(self.vocab.tokens)}

    @classmethod
    def from_payload(cls, payload: dict) -> Side:
        """The side `to_payload` saved."""
        from seqlab.data.tokenize import tokenizer_from_config

        model = payload.get("model")
        model_bytes = None if model is None else bytes(model.numpy().tobytes())
        tokenizer = tokenizer_from_config(json.loads(payload["tokenizer"]), model_bytes)
        return cls(tokenizer, Vocab(payload["vocab"]))

"""Tokenizers: text <-> token strings, for words, whitespace chunks, characters and SentencePiece.

A tokenizer only splits text into token strings and joins them back; `seqlab/data/vocab.py` maps
tokens to ids. All four kinds satisfy the `Tokenizer` protocol, describe themselves with a
JSON-serialisable `config()` (plus `model_bytes` for SentencePiece), and are rebuilt from that by
`tokenizer_from_config`, which is what checkpoints and `datasets.map` workers rely on. They are
deterministic and picklable.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import sentencepiece as spm

from seqlab.data.sentencepiece_trainer import TrainerError, train_in_child
from seqlab.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab
from seqlab.errors import ConfigError, DataError

SPACE = "\u2581"  # "▁", the visible space of CharTokenizer and SentencePiece


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers: split, join, and a description to rebuild it from."""

    def tokenize(self, text: str) -> list[str]:
        """Split one line of text into token strings."""
        ...

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Join token strings back into text (the inverse of `tokenize` on normalised text)."""
        ...

    def config(self) -> dict:
        """JSON-serialisable settings, including "kind", for `tokenizer_from_config`."""
        ...


# An HTML entity, an acronym with dots ("U.S.", "S.C.U.B.A."), or a word: letters/digits/underscore
# with inner hyphens and apostrophes ("T-shirt", "don't", "l'homme"), between digits a decimal
# point or comma ("3.5", "1,000"), and a German elision hyphen at its end or, after a space, at its
# start ("Zwei- und vierbeinige", "Schutzhelm und -handschuhe"). Anything else that is not a space
# is punctuation; a run of the same punctuation character ("...", "--") is one token.
_WORD_OR_PUNCT = re.compile(
    r"&[a-zA-Z]+;|&#\d+;"  # HTML entities left in corpora ("&amp;")
    r"|(?:[^\W\d_]\.){2,}(?!\w)"  # dotted acronyms
    r"|(?:(?<!\S)-(?=\w))?\w+(?:(?:[-'’]|(?<=\d)[.,](?=\d))\w+)*(?:-(?=[^\w-]|$))?"  # words
    r"|([^\w\s])\1*"  # punctuation runs
)
_CLOSE = frozenset(".,!?;:)]}%…»›")  # no space before
_OPEN = frozenset("([{¿¡«‹#$")  # no space after
_JOIN = frozenset("/")  # no space on either side ("and/or", "1/2")
# Quotes, by family: toggling ones open when their family is closed and close it otherwise;
# German low quotes always open, right curly quotes always close.
_TOGGLE_QUOTES = {'"': '"', "'": "'", "“": '"', "‘": "'"}
_OPENING_QUOTES = {"„": '"', "‚": "'"}
_CLOSING_QUOTES = {"”": '"', "’": "'"}
_ALL_QUOTES = frozenset(_TOGGLE_QUOTES) | frozenset(_OPENING_QUOTES) | frozenset(_CLOSING_QUOTES)


class WordTokenizer:
    """A deterministic, dependency-free word tokenizer for European languages.

    Rules of `tokenize`:
      1. `str.lower()` when `lowercase`; split on any Unicode whitespace (tabs and U+00A0 included).
      2. In each chunk, a word is a run of `\\w` characters joined by inner hyphens or apostrophes
         (`T-shirt`, `don't`, `l'homme`, `3-year-old`) or, between digits, by `.` or `,` (`3.5`);
         German elision hyphens stay on the word (`Zwei- und vierbeinige`, `und -handschuhe`);
         dotted acronyms (`U.S.`, `S.C.U.B.A.`) and HTML entities (`&amp;`) stay whole.
      3. Every other character is punctuation and a token of its own; a run of one repeated
         punctuation character (`...`, `--`, `!!`) stays one token.

    Rules of `detokenize` (join with single spaces, except):
      - no space before a token made only of closing marks `. , ! ? ; : ) ] } % … » ›`;
      - no space after an opening mark `( [ { ¿ ¡ « ‹ # $`; no space around `/`;
      - quotes come in two families, double and single. `„ ‚` always open and `” ’` always
        close; `" ' “ ‘` open when their family is not open and close it otherwise (so both
        "…" and German „…“ work). Opening: no space after; closing: no space before. A `'`
        that would open but has no partner later in the line, after a word ending in "s" (not
        "'s"), is a plural possessive ("the dogs' toys") and attaches to that word,
        and a `-` right after a closing quote joins both sides (German „Open“-Schild).

    So `detokenize(tokenize(t)) == " ".join(t.split())` for ordinary sentences; the exceptions
    are spaces the rules cannot see (French "chien !", spaced slashes), which sacrebleu's 13a
    tokenizer removes anyway, so detokenized BLEU stays close to tokenized BLEU.

    Args:
        lowercase: lowercase the text before splitting.
    """

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        """Split `text` into words and punctuation (see the class docstring)."""
        if self.lowercase:
            text = text.lower()
        return [m[0] for m in _WORD_OR_PUNCT.finditer(text)]

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Join `tokens` with spaces and re-attach punctuation (see the class docstring)."""
        out: list[str] = []
        glue_next = True  # no space before the next token (start of line, after an opener)
        open_quotes: set[str] = set()
        closed_quote = False  # the previous token closed a quote
        apostrophes_left = sum(t == "'" for t in tokens)
        for token in tokens:
            apostrophes_left -= token == "'"
            if token == "-" and closed_quote:
                glue, glue_after = True, True  # „Open“-Schild
            elif token == "'" and "'" not in open_quotes and not apostrophes_left and _plural(out):
                glue, glue_after = True, False  # plural possessive: "the dogs' toys"
            else:
                glue, glue_after = _attachment(token, open_quotes)
            if out and not (glue or glue_next):
                out.append(" ")
            out.append(token)
            glue_next = glue_after
            closed_quote = glue and token in _ALL_QUOTES
        return "".join(out)

    def config(self) -> dict:
        """`{"kind": "word", "lowercase": ...}`."""
        return {"kind": "word", "lowercase": self.lowercase}

    def __repr__(self) -> str:
        return f"WordTokenizer(lowercase={self.lowercase})"


def _plural(out: list[str]) -> bool:
    """Whether the text so far ends in a word ending in "s" that is not itself "'s"."""
    last = out[-1] if out else ""
    return last[-1:] in ("s", "S") and last[-2:-1] not in ("'", "’")


def _attachment(token: str, open_quotes: set[str]) -> tuple[bool, bool]:
    """(no space before `token`, no space after it), updating the open quote families."""
    if token in _OPENING_QUOTES:
        open_quotes.add(_OPENING_QUOTES[token])
        return False, True
    if token in _CLOSING_QUOTES:
        open_quotes.discard(_CLOSING_QUOTES[token])
        return True, False
    family = _TOGGLE_QUOTES.get(token)
    if family is not None:
        if family in open_quotes:
            open_quotes.discard(family)
            return True, False
        open_quotes.add(family)
        return False, True
    if token in _JOIN:
        return True, True
    if all(c in _CLOSE for c in token):
        return True, False
    if all(c in _OPEN for c in token):
        return False, True
    return False, False


class CharTokenizer:
    """Characters as tokens; each run of whitespace becomes one `▁` (U+2581) token.

    `detokenize` turns `▁` back into a space, so `detokenize(tokenize(t)) == " ".join(t.split())`
    (text that already holds `▁` comes back with a space there).

    Args:
        lowercase: lowercase the text before splitting.
    """

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        """Characters of the whitespace-normalised text, spaces as `▁`."""
        if self.lowercase:
            text = text.lower()
        return list(SPACE.join(text.split()))

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Concatenate `tokens`, `▁` -> space."""
        return "".join(tokens).replace(SPACE, " ")

    def config(self) -> dict:
        """`{"kind": "char", "lowercase": ...}`."""
        return {"kind": "char", "lowercase": self.lowercase}

    def __repr__(self) -> str:
        return f"CharTokenizer(lowercase={self.lowercase})"


class WhitespaceTokenizer:
    """Tokens are the whitespace-separated chunks of already tokenized text (WikiText, SST-2).

    `str.split()` and `" ".join`, as d2l and pytorch/examples read WikiText-2: `@-@` and `<unk>`
    stay single tokens, which `WordTokenizer` would split.

    Args:
        lowercase: lowercase the text before splitting.
    """

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        """The whitespace-separated chunks of `text` (after lowercasing when asked)."""
        return (text.lower() if self.lowercase else text).split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        """`tokens` joined by single spaces."""
        return " ".join(tokens)

    def config(self) -> dict:
        """`{"kind": "whitespace", "lowercase": ...}`."""
        return {"kind": "whitespace", "lowercase": self.lowercase}

    def __repr__(self) -> str:
        return f"WhitespaceTokenizer(lowercase={self.lowercase})"


class SentencePieceTokenizer:
    """Subword pieces from a SentencePiece model (Kudo & Richardson, 2018, arXiv:1808.06226).

    Models trained by `train` reserve ids 0..6 for `vocab.SPECIALS`, so `vocab()` is a plain
    `Vocab` whose ids equal the processor's. The model lives in `model_bytes` (the serialized
    ModelProto), which is all a checkpoint or a pickled copy needs.

    Args:
        model_bytes: a serialized SentencePiece model.
        lowercase: lowercase text before encoding (the model should be trained on lowercased text).
        model_type: "bpe" or "unigram", recorded in `config()`.

    Raises:
        DataError: `model_bytes` is not a SentencePiece model.
    """

    def __init__(self, model_bytes: bytes, lowercase: bool = False, model_type: str = "bpe"):
        self.model_bytes = bytes(model_bytes)
        self.lowercase = lowercase
        self.model_type = model_type
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        except (RuntimeError, TypeError, OSError) as e:
            raise DataError(
                f"not a SentencePiece model ({len(self.model_bytes)} bytes): {e}"
            ) from e

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        model_type: str = "bpe",
        vocab_size: int = 8000,
        character_coverage: float = 1.0,
        lowercase: bool = False,
        max_sentences: int | None = None,
    ) -> SentencePieceTokenizer:
        """Train a model on `texts` (one sentence each), in a child process.

        The trainer's memory grows with the sample and glibc would keep it after training, so
        the trainer runs in a short-lived child (`sentencepiece_trainer`) that returns it to the
        OS when it exits; the long-lived process (which may go on to train a network) stays
        small. The model is the one an in-process `SentencePieceTrainer.train` would write.

        Args:
            texts: training sentences; the first `max_sentences` are used when given.
            model_type: "bpe" (Sennrich et al., 2016) or "unigram" (Kudo, 2018).
            vocab_size: pieces in the model, the 7 specials included (= `len(vocab())`).
            character_coverage: share of characters the model must cover (1.0 for Latin scripts).
            lowercase: lowercase the training texts and every later input.
            max_sentences: cap on the number of training sentences; None for all.

        Raises:
            ConfigError: unknown `model_type`, or a `vocab_size` that the data cannot support
                (the message says which way to move `sp_vocab_size`).
            DataError: `texts` holds no usable sentence.
        """
        if model_type not in ("bpe", "unigram"):
            raise ConfigError(f"sp_model_type must be 'bpe' or 'unigram', got {model_type!r}")
        sentences = _training_sentences(texts, lowercase, max_sentences)
        first = next(sentences, None)
        if first is None:
            raise DataError("cannot train SentencePiece on this data: no non-empty sentence")
        options = _trainer_options(model_type, vocab_size, character_coverage)
        try:
            model_bytes = train_in_child(itertools.chain([first], sentences), options)
        except TrainerError as e:
            raise _training_error(e, vocab_size) from e
        return cls(model_bytes, lowercase=lowercase, model_type=model_type)

    def tokenize(self, text: str) -> list[str]:
        """Pieces of `text` (after lowercasing when asked)."""
        if self.lowercase:
            text = text.lower()
        return self._sp.encode(text, out_type=str)

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Text of `tokens` (pieces); `<unk>` pieces come back as " ⁇ "."""
        return self._sp.decode_pieces(list(tokens))

    def vocab(self) -> Vocab:
        """The model's pieces in id order, as a `Vocab` (its ids equal the processor's)."""
        return Vocab([self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())])

    def encode_ids(self, text: str) -> list[int]:
        """The processor's own ids for `text` (equal to `vocab().encode(tokenize(text))`)."""
        if self.lowercase:
            text = text.lower()
        return self._sp.encode(text, out_type=int)

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode_ids` of every text, in one call to the processor (on one thread)."""
        if self.lowercase:
            texts = [text.lower() for text in texts]
        return self._sp.encode(texts, out_type=int, num_threads=1)

    def config(self) -> dict:
        """`{"kind": "sentencepiece", "lowercase": ..., "model_type": ...}`."""
        return {"kind": "sentencepiece", "lowercase": self.lowercase, "model_type": self.model_type}

    def __getstate__(self) -> dict[str, Any]:
        return {"model_bytes": self.model_bytes, **self.config()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_bytes"], state["lowercase"], state["model_type"])

    def __repr__(self) -> str:
        size = self._sp.get_piece_size()
        return (
            f"SentencePieceTokenizer({self.model_type}, {size} pieces, lowercase={self.lowercase})"
        )


def _training_sentences(
    texts: Iterable[str], lowercase: bool, max_sentences: int | None
) -> Iterator[str]:
    """Stripped, non-empty (optionally lowercased) sentences, at most `max_sentences`."""
    if max_sentences is not None and max_sentences < 1:
        raise ConfigError(f"max_sentences must be at least 1, got {max_sentences}")
    stripped = (t.strip() for t in texts)
    cleaned = (t.lower() if lowercase else t for t in stripped if t)
    return itertools.islice(cleaned, max_sentences)


def _trainer_options(model_type: str, vocab_size: int, character_coverage: float) -> dict:
    """SentencePiece trainer flags that pin ids 0..6 to `SPECIALS` and keep the log quiet."""
    assert SPECIALS[:4] == (PAD, UNK, BOS, EOS)
    return {
        "model_type": model_type,
        "vocab_size": vocab_size,
        "character_coverage": character_coverage,
        "pad_id": 0,
        "unk_id": 1,
        "bos_id": 2,
        "eos_id": 3,
        "pad_piece": PAD,
        "unk_piece": UNK,
        "bos_piece": BOS,
        "eos_piece": EOS,
        "user_defined_symbols": ",".join(SPECIALS[4:]),
        "minloglevel": 2,
    }


def _training_error(error: RuntimeError, vocab_size: int) -> Exception:
    """Turn SentencePiece's trainer errors into errors naming the recipe key to change."""
    message = str(error)
    if "Vocabulary size too high" in message:
        limit = re.search(r"<= (\d+)", message)
        hint = f" (at most {limit.group(1)} here)" if limit else ""
        return ConfigError(
            f"sp_vocab_size={vocab_size} is too large for this training data; "
            f"lower sp_vocab_size{hint}"
        )
    if "smaller than required_chars" in message:
        return ConfigError(
            f"sp_vocab_size={vocab_size} is smaller than the characters the model must cover; "
            "raise sp_vocab_size or lower sp_character_coverage"
        )
    if "vocab_size" in message:
        return ConfigError(f"sp_vocab_size={vocab_size} rejected by SentencePiece: {message}")
    if "input" in message.lower() or "sentence" in message.lower():
        return DataError(f"cannot train SentencePiece on this data: {message}")
    return error


def tokenizer_from_config(config: dict, model_bytes: bytes | None = None) -> Tokenizer:
    """Rebuild a tokenizer from its `config()` (and `model_bytes` for SentencePiece).

    Raises:
        ConfigError: unknown or missing "kind", or SentencePiece without model bytes.
    """
    kind = config.get("kind") if isinstance(config, dict) else None
    lowercase = bool(config.get("lowercase", False)) if isinstance(config, dict) else False
    if kind == "word":
        return WordTokenizer(lowercase=lowercase)
    if kind == "char":
        return CharTokenizer(lowercase=lowercase)
    if kind == "whitespace":
        return WhitespaceTokenizer(lowercase=lowercase)
    if kind == "sentencepiece":
        if model_bytes is None:
            raise ConfigError("tokenizer kind 'sentencepiece' needs the model bytes; none given")
        return SentencePieceTokenizer(
            model_bytes, lowercase=lowercase, model_type=config.get("model_type", "bpe")
        )
    raise ConfigError(
        f"tokenizer config: unknown kind {kind!r} "
        "(expected 'word', 'char', 'whitespace' or 'sentencepiece')"
    )


def encode_text(tokenizer: Tokenizer, vocab: Vocab, text: str) -> list[int]:
    """Ids of `text`, with every literal `<unk>` mapped to the `<unk>` id (WikiText writes
    unknown words so; SentencePiece would otherwise spell it out as pieces). How BERT's
    pretraining, fine-tuning and `seqlab classify` all turn a sentence into ids."""
    ids: list[int] = []
    for k, part in enumerate(text.split(UNK)):
        if k:
            ids.append(vocab.unk_id)
        ids.extend(vocab.encode(tokenizer.tokenize(part)))
    return ids

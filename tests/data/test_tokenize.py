"""Tests of seqlab/data/tokenize.py: word, char and SentencePiece tokenizers, configs, pickling."""

from __future__ import annotations

import gzip
import io
import pickle
import random
import re

import pytest
import sacrebleu
import sentencepiece as spm
from hypothesis import given
from hypothesis import strategies as st

from seqlab.data.tokenize import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    _trainer_options,
    tokenizer_from_config,
)
from seqlab.data.vocab import SPECIALS
from seqlab.errors import ConfigError, DataError
from tests.conftest import corpus_mirror

# Multi30k-style lines (task 1 train/val, en and de, plus a few fr), as they appear in the corpus.
SENTENCES = [
    "Two young, White males are outside near many bushes.",
    "Several men in hard hats are operating a giant pulley system.",
    "A little girl climbing into a wooden playhouse.",
    "A man in a blue shirt is standing on a ladder cleaning windows.",
    "The dog's owner doesn't know it's 3.5 miles (about 5.6 km) away!",
    "A sign that says \"Open\" hangs above a 3-year-old's head; the boys' toys lie around.",
    "Is the man wearing a T-shirt? Yes: a red one...",
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Zwei Männer stehen vor einem Cafe mit „Open“-Anzeige.",
    "Ein Mann trägt Schutzhelm und -handschuhe, während Zwei- und Vierbeiner vorbeigehen.",
    "Eine Frau sagt: „Wir sind alle Arbeitnehmer.“",
    "Un homme avec un chapeau orange regardant quelque chose.",
    "Une famille est assise dans l'herbe près d'un arbre.",
]


def normalised(text: str) -> str:
    return " ".join(text.split())


# --- WordTokenizer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
         ["Ein", "Mann", "mit", "einem", "orangefarbenen", "Hut", ",", "der", "etwas",
          "anstarrt", "."]),
        ("I don't see l'homme.", ["I", "don't", "see", "l'homme", "."]),
        ("It costs 3.5 or 1,000 (not 7).", ["It", "costs", "3.5", "or", "1,000", "(", "not",
                                            "7", ")", "."]),
        ("A T-shirt for a 3-year-old!?", ["A", "T-shirt", "for", "a", "3-year-old", "!", "?"]),
        ("Wait... what?!", ["Wait", "...", "what", "?", "!"]),
        ('He said "hi".', ["He", "said", '"', "hi", '"', "."]),
        ("Zwei- und vierbeinige", ["Zwei-", "und", "vierbeinige"]),
        ("A S.C.U.B.A. diver at Q&amp;A", ["A", "S.C.U.B.A.", "diver", "at", "Q", "&amp;", "A"]),
        ("tab\there\u00a0nbsp", ["tab", "here", "nbsp"]),
        ("   ", []),
    ],
)  # fmt: skip
def test_word_tokenize_splits_punctuation(text, tokens):
    assert WordTokenizer().tokenize(text) == tokens


@pytest.mark.parametrize("text", SENTENCES)
def test_word_round_trip(text):
    tok = WordTokenizer()
    tokens = tok.tokenize(text)
    assert tok.detokenize(tokens) == normalised(text)
    assert " " not in "".join(tokens)


@pytest.mark.parametrize(
    "tokens, text",
    [
        (["(", "a", ")", "b", "/", "c", "%"], "(a) b/c%"),
        (["$", "5", "for", "#", "1"], "$5 for #1"),
        (["the", "dogs", "'", "toys", "."], "the dogs' toys."),
        (["says", "'", "free", "dinner", "'", "."], "says 'free dinner'."),
        (["„", "Open", "“", "-", "Schild"], "„Open“-Schild"),
        (["¿", "Qué", "?"], "¿Qué?"),
    ],
)
def test_word_detokenize_rules(tokens, text):
    assert WordTokenizer().detokenize(tokens) == text


_TEXT = st.text(alphabet="abcXYZ09 .,!?()'\"-:;/", max_size=40)


@given(_TEXT)
def test_word_tokens_are_stable_under_a_round_trip(text):
    # Invariant: every token is a nonempty, space-free piece of the text, in order, and
    # detokenizing never loses or invents characters other than spaces.
    tok = WordTokenizer()
    tokens = tok.tokenize(text)
    assert all(t and not re.search(r"\s", t) for t in tokens)
    assert "".join(tokens) == re.sub(r"\s", "", text)
    assert tok.detokenize(tokens).replace(" ", "") == "".join(tokens)


def test_word_lowercase():
    tok = WordTokenizer(lowercase=True)
    assert tok.tokenize("Ein Mann, ÜBER Straße.") == ["ein", "mann", ",", "über", "straße", "."]
    assert WordTokenizer().tokenize("Ein Mann")[0] == "Ein"
    assert tok.config() == {"kind": "word", "lowercase": True}


def _multi30k(split: str, lang: str) -> list[str]:
    mirror = corpus_mirror()
    if mirror is None:
        pytest.skip("no corpus mirror")
    with gzip.open(mirror / "multi30k" / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [normalised(line) for line in f]


@pytest.mark.corpus
@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_word_detokenized_bleu_matches_tokenized_bleu(lang):
    refs = _multi30k("val", lang)
    tok, rng = WordTokenizer(), random.Random(0)
    ref_tokens = [tok.tokenize(r) for r in refs]
    assert sum(tok.detokenize(t) == r for t, r in zip(ref_tokens, refs)) >= 0.99 * len(refs)
    hyps = [[t for t in ts if rng.random() > 0.15] for ts in ref_tokens]  # drop 15% of tokens
    tokenized = sacrebleu.corpus_bleu(
        [" ".join(h) for h in hyps], [[" ".join(t) for t in ref_tokens]], tokenize="none",
        force=True,
    ).score  # fmt: skip
    detokenized = sacrebleu.corpus_bleu([tok.detokenize(h) for h in hyps], [refs]).score
    assert 30 < tokenized < 95
    assert abs(tokenized - detokenized) < 0.5


# --- CharTokenizer -----------------------------------------------------------------------------


def test_char_tokenize():
    assert CharTokenizer().tokenize(" Ab  c\td ") == ["A", "b", "▁", "c", "▁", "d"]
    assert CharTokenizer(lowercase=True).tokenize("Ab C") == ["a", "b", "▁", "c"]


@given(st.text(alphabet=st.characters(exclude_characters="\u2581"), max_size=40))
def test_char_round_trip(text):
    tok = CharTokenizer()
    assert tok.detokenize(tok.tokenize(text)) == normalised(text)


# --- SentencePieceTokenizer --------------------------------------------------------------------


def _training_lines() -> list[str]:
    """300 Multi30k lines when the mirror is there, else generated Multi30k-like text."""
    mirror = corpus_mirror()
    if mirror is not None:
        with gzip.open(mirror / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as f:
            return [normalised(line) for line, _ in zip(f, range(300))]
    words = sorted({w for s in SENTENCES for w in WordTokenizer().tokenize(s)})
    rng = random.Random(0)
    return [
        WordTokenizer().detokenize(rng.choices(words, k=rng.randint(4, 15))) for _ in range(300)
    ]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return _training_lines()


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp(request, lines) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(lines, model_type=request.param, vocab_size=200)


def test_sp_specials_have_vocab_ids(sp):
    vocab = sp.vocab()
    assert len(vocab) == 200
    assert vocab.tokens[: len(SPECIALS)] == SPECIALS
    pieces = sp.tokenize("<mask> a <sep>")  # user-defined symbols are atomic pieces
    assert {"<mask>", "<sep>"} <= set(pieces)
    assert sp.vocab().encode(["<mask>", "<sep>"]) == [4, 6]


def test_sp_vocab_ids_equal_processor_ids(sp, lines):
    vocab = sp.vocab()
    for text in [*lines[:50], "Zebra ünknown çhars €"]:
        assert vocab.encode(sp.tokenize(text)) == sp.encode_ids(text)


def test_sp_round_trip(sp, lines):
    for text in lines[:100]:
        assert sp.detokenize(sp.tokenize(text)) == text


def test_sp_pickle_and_config_round_trip(sp, lines):
    copy = pickle.loads(pickle.dumps(sp))
    rebuilt = tokenizer_from_config(sp.config(), sp.model_bytes)
    assert sp.config()["kind"] == "sentencepiece"
    for other in (copy, rebuilt):
        assert isinstance(other, SentencePieceTokenizer)
        assert other.config() == sp.config()
        assert other.model_bytes == sp.model_bytes
        assert [other.tokenize(t) for t in lines[:20]] == [sp.tokenize(t) for t in lines[:20]]


def test_sp_lowercase_and_max_sentences(lines):
    sp = SentencePieceTokenizer.train(
        lines, model_type="bpe", vocab_size=120, lowercase=True, max_sentences=100
    )
    assert sp.config() == {"kind": "sentencepiece", "lowercase": True, "model_type": "bpe"}
    assert sp.tokenize("TWO Dogs") == sp.tokenize("two dogs")
    pieces = sp.vocab().tokens[len(SPECIALS) :]
    assert all(p == p.lower() for p in pieces)


def test_sp_vocab_size_errors_name_the_setting(lines):
    with pytest.raises(ConfigError, match="lower sp_vocab_size"):
        SentencePieceTokenizer.train(lines[:50], vocab_size=20000)
    with pytest.raises(ConfigError, match="raise sp_vocab_size"):
        SentencePieceTokenizer.train(lines[:50], vocab_size=12)
    with pytest.raises(ConfigError, match="sp_model_type"):
        SentencePieceTokenizer.train(lines[:50], model_type="word")


def test_sp_model_equals_in_process_training(sp, lines):
    """Training in a child process changes nothing: the model is the in-process trainer's."""
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=writer,
        **_trainer_options(sp.model_type, 200, 1.0),
    )
    assert sp.model_bytes == writer.getvalue()


def test_sp_trains_in_another_process(lines, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("SentencePiece trained in the test process")

    for name in ("train", "Train", "_Train"):
        monkeypatch.setattr(spm.SentencePieceTrainer, name, refuse)
    sp = SentencePieceTokenizer.train(lines[:100], vocab_size=100)
    assert len(sp.vocab()) == 100


def test_sp_line_breaks_inside_a_sentence_are_spaces(lines):
    broken = [line.replace(" ", "\r" if k % 3 else "\n", 1) for k, line in enumerate(lines[:100])]
    assert broken != lines[:100]
    sp = SentencePieceTokenizer.train(broken, vocab_size=100)
    assert sp.model_bytes == SentencePieceTokenizer.train(lines[:100], vocab_size=100).model_bytes


def test_sp_trains_on_stripped_lowercased_non_empty_sentences_up_to_the_cap(lines):
    messy = [text for line in lines for text in ("", f"  {line.upper()}\t")]
    sp = SentencePieceTokenizer.train(messy, vocab_size=100, lowercase=True, max_sentences=100)
    clean = [line.lower() for line in lines[:100]]
    assert sp.model_bytes == SentencePieceTokenizer.train(clean, vocab_size=100).model_bytes


def test_sp_needs_a_non_empty_sentence():
    with pytest.raises(DataError, match="no non-empty sentence"):
        SentencePieceTokenizer.train(["", "  ", "\n"], vocab_size=50)


def test_sp_rejects_bytes_that_are_no_model():
    with pytest.raises(DataError, match="not a SentencePiece model"):
        SentencePieceTokenizer(b"certainly not a model proto")


# --- configs and pickling of all kinds ---------------------------------------------------------


@pytest.mark.parametrize("tok", [WordTokenizer(), WordTokenizer(True), CharTokenizer(True)])
def test_simple_tokenizers_rebuild_and_pickle(tok):
    assert isinstance(tok, Tokenizer)
    for other in (tokenizer_from_config(tok.config(), None), pickle.loads(pickle.dumps(tok))):
        assert type(other) is type(tok) and other.config() == tok.config()
        assert [other.tokenize(s) for s in SENTENCES] == [tok.tokenize(s) for s in SENTENCES]


def test_tokenizer_from_config_errors():
    with pytest.raises(ConfigError, match="model bytes"):
        tokenizer_from_config({"kind": "sentencepiece", "lowercase": False}, None)
    with pytest.raises(ConfigError, match="'bpe-dropout'"):
        tokenizer_from_config({"kind": "bpe-dropout"}, None)
    with pytest.raises(ConfigError, match="unknown kind None"):
        tokenizer_from_config({}, None)

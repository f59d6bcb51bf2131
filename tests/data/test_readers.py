"""Tests for seqlab.data.readers: strict UTF-8, alignment, the corpora's documented oddities.

Unit tests write tiny files; integration tests (`corpus` marker) read a slice of each real corpus
through the mirror and check counts the mirror's README documents.
"""

from __future__ import annotations

import gzip
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.corpus import corpus_path, load_manifest
from seqlab.data.readers import (
    count_lines,
    read_lines,
    read_parallel,
    read_split,
    read_sst2,
    read_tsv_pairs,
)
from seqlab.errors import DataError
from tests.conftest import corpus_mirror


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz"])
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    path = write(tmp_path / name, b"fine\nalso fine\nbad \xff byte\n")
    lines = read_lines(path)
    assert next(lines) == "fine" and next(lines) == "also fine"
    with pytest.raises(DataError, match=rf"{name}:3: invalid UTF-8"):
        next(lines)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.txt: no such file"):
        list(read_lines(tmp_path / "nothing.txt"))


def test_feff_is_removed_anywhere_and_tabs_are_not_split(tmp_path):
    path = write(tmp_path / "w.tokens", " = Title = \n a\ufeffb \n\ufeffc\tTab\n".encode())
    assert list(read_lines(path)) == ["= Title =", "ab", "c\tTab"]
    assert list(read_lines(path, strip=False)) == [" = Title = ", " ab ", "c\tTab"]


def test_only_newline_splits_lines(tmp_path):
    # \r, U+2028 and U+0085 are characters inside a line, not line breaks
    path = write(tmp_path / "x.txt", "a\rb\u2028c\u0085d\ne".encode())
    assert list(read_lines(path, strip=False)) == ["a\rb\u2028c\u0085d", "e"]
    assert count_lines(path) == 2


# any text UTF-8 can encode (no lone surrogates), without line breaks or a byte-order mark
LINE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\ufeff")


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(st.text(alphabet=LINE_CHARS), max_size=20),
    final_newline=st.booleans(),
)
def test_count_lines_agrees_with_read_lines(tmp_path_factory, lines, final_newline):
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    path = write(tmp_path_factory.mktemp("c") / "x.txt.gz", text.encode("utf-8"))
    read = list(read_lines(path, strip=False))
    assert count_lines(path) == len(read)
    expected = text.split("\n")[: -1 if text.endswith("\n") else None] if text else []
    assert read == expected


def test_parallel_count_mismatch_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "train.de", b"a\nb\nc\n")
    tgt = write(tmp_path / "train.en", b"a\nb\n")
    with pytest.raises(DataError) as info:
        next(read_parallel(src, tgt))
    message = str(info.value)
    assert (
        str(src) in message and str(tgt) in message and "3 lines" in message and "has 2" in message
    )


def test_parallel_empty_corpus(tmp_path):
    src, tgt = write(tmp_path / "a.de", b""), write(tmp_path / "a.en", b"")
    with pytest.raises(DataError, match="empty corpus"):
        list(read_parallel(src, tgt))


def test_parallel_strips_sides_and_keeps_inner_tab(tmp_path):
    src = write(tmp_path / "t.de", " Zwei M\u00e4nner in einer \tWasserfont\u00e4ne. \n".encode())
    tgt = write(tmp_path / "t.en", "  Two men\u00a0in a fountain.\n".encode())
    [(de, en)] = read_parallel(src, tgt)
    assert de == "Zwei M\u00e4nner in einer \tWasserfont\u00e4ne."
    assert en == "Two men\u00a0in a fountain."  # inner U+00A0 left for the tokenizer


def test_tsv_pairs_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "fra.txt", "Go.\tVa !\nRun!\tCours\u202f!\tCC-BY\n".encode())
    pairs = read_tsv_pairs(path)
    assert next(pairs) == ("Go.", "Va !")
    with pytest.raises(DataError, match=r"fra\.txt:2: expected 2 tab-separated columns, found 3"):
        next(pairs)
    with pytest.raises(DataError, match="empty corpus"):
        list(read_tsv_pairs(write(tmp_path / "empty.txt", b"")))


def test_sst2_labelled_and_test_files(tmp_path):
    train = write(
        tmp_path / "train.tsv", b"sentence\tlabel\nhide new secretions \t0\ngreat film \t1\n"
    )
    assert list(read_sst2(train)) == [("hide new secretions", 0), ("great film", 1)]
    test = write(tmp_path / "test.tsv", b"index\tsentence\n0\tuneasy mishmash .\n")
    assert list(read_sst2(test)) == [("uneasy mishmash .", None)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text\tlabel\nx\t0\n", r"bad\.tsv:1: not a GLUE SST-2 file"),
        (b"sentence\tlabel\nx \t2\n", r"bad\.tsv:2: label '2' is not 0 or 1"),
        (b"sentence\tlabel\nx 0\n", r"bad\.tsv:2: expected 2 tab-separated fields, found 1"),
        (b"index\tsentence\nA\tx\n", r"bad\.tsv:2: index 'A' is not an integer"),
        (b"", r"bad\.tsv:1: not a GLUE SST-2 file"),
    ],
)
def test_sst2_malformed(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        list(read_sst2(write(tmp_path / "bad.tsv", content)))


def test_read_split_dispatches_on_format(tmp_path):
    manifest = load_manifest("tatoeba-fra-eng")
    write(tmp_path / "fra.txt", b"Go.\tVa !\nHi.\tSalut !\n")
    assert list(read_split(manifest, tmp_path, "train")) == [
        {"src": "Go.", "tgt": "Va !"},
        {"src": "Hi.", "tgt": "Salut !"},
    ]
    reverse = read_split(manifest, tmp_path, "train", src_lang="fr", tgt_lang="en")
    assert next(reverse) == {"src": "Va !", "tgt": "Go."}
    multi30k = load_manifest("multi30k")
    with pytest.raises(DataError, match="give src_lang and tgt_lang"):
        next(read_split(multi30k, tmp_path, "val"))
    with pytest.raises(DataError, match="no language 'cs'"):
        next(read_split(multi30k, tmp_path, "val", src_lang="cs", tgt_lang="en"))


# --- the real corpora, through the mirror -----------------------------------------------------


@pytest.fixture
def mirror() -> Path:
    found = corpus_mirror()
    if found is None:
        pytest.skip("no corpus mirror")
    return found


def fetched(name: str, split: str, lang: str | None, mirror: Path, cache: Path) -> Path:
    """Fetch one file of a real corpus from the mirror into `cache`; return its folder."""
    path = corpus_path(name, split, lang, cache=cache, mirror=mirror, progress=False)
    assert path.is_file()
    return cache / "corpora" / name


@pytest.mark.corpus
def test_multi30k_val(mirror, tmp_path):
    for lang in ("de", "en"):
        folder = fetched("multi30k", "val", lang, mirror, tmp_path)
    rows = list(read_split(load_manifest("multi30k"), folder, "val", src_lang="de", tgt_lang="en"))
    assert len(rows) == 1014
    assert all(r["src"] == r["src"].strip() and r["tgt"] for r in rows)


@pytest.mark.corpus
def test_multi30k_train_de_line_7366_keeps_its_tab(mirror):
    line = next(islice(read_lines(mirror / "multi30k" / "train.de.gz"), 7365, None))
    assert line.endswith('in einer \tWasserfont\u00e4ne."')


@pytest.mark.corpus
def test_tatoeba_slice(mirror):
    pairs = list(islice(read_tsv_pairs(mirror / "tatoeba-fra-eng" / "fra.txt.gz"), 100))
    assert pairs[0] == ("Go.", "Va !") and pairs[2] == ("Run!", "Cours\u202f!")


@pytest.mark.corpus
def test_wikitext2_valid(mirror, tmp_path):
    folder = fetched("wikitext-2", "valid", None, mirror, tmp_path)
    rows = [r["text"] for r in read_split(load_manifest("wikitext-2"), folder, "valid")]
    assert len(rows) == 3760 and rows.count("") == 1299
    tokens = sum(len(text.split()) + 1 for text in rows)  # pytorch/examples: one <eos> per line
    assert tokens == 217_646


@pytest.mark.corpus
def test_timemachine(mirror, tmp_path):
    folder = fetched("timemachine", "train", None, mirror, tmp_path)
    rows = [r["text"] for r in read_split(load_manifest("timemachine"), folder, "train")]
    assert len(rows) == 3221 and rows[0] == "The Time Machine, by H. G. Wells [1898]"


@pytest.mark.corpus
def test_sst2_dev(mirror, tmp_path):
    folder = fetched("sst2", "dev", None, mirror, tmp_path)
    rows = list(read_split(load_manifest("sst2"), folder, "dev"))
    assert len(rows) == 872 and sum(r["label"] for r in rows) == 444
    assert all(not r["text"].endswith(" ") for r in rows)
    test_rows = list(islice(read_sst2(mirror / "sst2" / "test.tsv.gz"), 100))
    assert test_rows[0] == ("uneasy mishmash of styles and genres .", None)


@pytest.mark.corpus
def test_iwslt14_test(mirror, tmp_path):
    for lang in ("de", "en"):
        folder = fetched("iwslt14-de-en", "test", lang, mirror, tmp_path)
    rows = list(islice(read_split(load_manifest("iwslt14-de-en"), folder, "test"), 100))
    assert len(rows) == 100 and all(r["src"] and r["tgt"] for r in rows)
    assert count_lines(folder / "tokenized" / "test.de") == 6750


def test_stdin_is_read_as_strictly_as_a_file(monkeypatch):
    """Stdin ("-") is read as bytes: split on \\n only, invalid UTF-8 named by line."""
    import io
    import sys

    from seqlab.data.readers import read_lines

    raw = "caf\u00e9 \ufeffau lait\r\nsecond\rline\n".encode()
    stdin = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert list(read_lines("-", strip=False)) == ["caf\u00e9 au lait\r", "second\rline"]
    stdin = io.TextIOWrapper(io.BytesIO(b"fine\n\xff bad\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(DataError, match=r"<stdin>:2: invalid UTF-8"):
        list(read_lines("-"))
    # a text stream without bytes underneath (what tests feed the CLI) reads the same
    monkeypatch.setattr(sys, "stdin", io.StringIO("fine\n\udcff bad\n"))
    with pytest.raises(DataError, match=r"<stdin>:2: invalid UTF-8"):
        list(read_lines("-"))

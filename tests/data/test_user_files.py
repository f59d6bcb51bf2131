"""Reading the user's parallel files: prefix pairs, TSV, JSONL, gzip, a saved HF dataset; and every
kind of bad input, each a `DataError` naming the file and the line (or both counts)."""

from __future__ import annotations

import gzip
import json

import pytest

from seqlab.data.user_files import file_identity, input_files, layout, read_hf_pairs, read_pairs
from seqlab.errors import DataError

PAIRS = [("ein Haus", "a house"), ("zwei Hunde", "two dogs"), ("drei", "three")]


def write_prefix(folder, pairs=PAIRS, name="train", zipped=False):
    for lang, side in (("de", 0), ("en", 1)):
        text = "".join(p[side] + "\n" for p in pairs).encode("utf-8")
        path = folder / f"{name}.{lang}{'.gz' if zipped else ''}"
        path.write_bytes(gzip.compress(text) if zipped else text)
    return folder / name


def rows(path, **fields):
    return [(r["src"], r["tgt"]) for r in read_pairs(path, "de", "en", **fields)]


def test_layout_follows_the_file_name():
    assert layout("data/train") == "prefix"
    assert layout("data/train.de-en") == "prefix"
    assert layout("x/train.tsv") == layout("x/train.tsv.gz") == "tsv"
    assert layout("x/train.jsonl.gz") == "jsonl"


@pytest.mark.parametrize("zipped", [False, True])
def test_prefix_files_read_as_pairs(tmp_path, zipped):
    prefix = write_prefix(tmp_path, zipped=zipped)
    assert rows(prefix) == PAIRS
    assert [p.name for p in input_files(prefix, "de", "en")] == [
        f"train.de{'.gz' if zipped else ''}",
        f"train.en{'.gz' if zipped else ''}",
    ]


def test_bom_crlf_and_trailing_blanks_are_not_text(tmp_path):
    (tmp_path / "t.de").write_bytes("\ufeffein Haus  \r\nzwei\t\r\n".encode())
    (tmp_path / "t.en").write_bytes(b"a house\r\ntwo \r\n")
    assert rows(tmp_path / "t") == [("ein Haus", "a house"), ("zwei", "two")]
    tsv = tmp_path / "t.tsv"
    tsv.write_bytes("\ufeffein Haus \ta house \r\n".encode())
    assert rows(tsv) == [("ein Haus", "a house")]


@pytest.mark.parametrize("zipped", [False, True])
def test_tsv_and_jsonl_read_as_pairs(tmp_path, zipped):
    tsv_text = "".join(f"{s}\t{t}\n" for s, t in PAIRS)
    records = [{"translation": {"de": s, "en": t}} for s, t in PAIRS[:2]]
    records.append({"de": PAIRS[2][0], "en": PAIRS[2][1], "id": 3})  # flat
    jsonl_text = "".join(json.dumps(r) + "\n" for r in records)
    suffix = ".gz" if zipped else ""
    for name, text in (("a.tsv", tsv_text), ("a.jsonl", jsonl_text)):
        data = text.encode("utf-8")
        (tmp_path / (name + suffix)).write_bytes(gzip.compress(data) if zipped else data)
        assert rows(tmp_path / (name + suffix)) == PAIRS


def test_jsonl_fields_name_the_text_columns(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"source": "ein Haus", "target": "a house"}\n')
    assert rows(path, src_field="source", tgt_field="target") == [("ein Haus", "a house")]


def test_blank_lines_become_empty_pairs_for_the_filter_to_count(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("ein Haus\ta house\n\nzwei\t\n")
    assert rows(tsv) == [("ein Haus", "a house"), ("", ""), ("zwei", "")]


def test_a_saved_hf_dataset_reads_like_jsonl(tmp_path):
    import datasets

    records = [{"translation": {"de": s, "en": t}} for s, t in PAIRS]
    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(str(folder))
    got = [(r["src"], r["tgt"]) for r in read_hf_pairs(str(folder), None, "train", "de", "en")]
    assert got == PAIRS
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: train\)"):
        list(read_hf_pairs(str(folder), None, "validation", "de", "en"))


def test_file_identity_changes_when_a_file_is_rewritten(tmp_path):
    prefix = write_prefix(tmp_path)
    before = file_identity(input_files(prefix, "de", "en"))
    (tmp_path / "train.en").write_text("a house\ntwo dogs\nthree!\n")
    assert file_identity(input_files(prefix, "de", "en")) != before


# Hostile input: each names the file and the line (or both paths and counts).


def test_prefix_files_of_different_lengths_name_both_paths_and_counts(tmp_path):
    prefix = write_prefix(tmp_path)
    (tmp_path / "train.en").write_text("a house\ntwo dogs\n")
    with pytest.raises(DataError) as error:
        rows(prefix)
    message = str(error.value)
    assert f"{tmp_path / 'train.de'} has 3 lines" in message
    assert f"{tmp_path / 'train.en'} has 2" in message


def test_invalid_utf8_names_path_and_line(tmp_path):
    prefix = write_prefix(tmp_path)
    (tmp_path / "train.en").write_bytes(b"a house\ntwo \xff dogs\nthree\n")
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.en'}:2: invalid UTF-8"):
        rows(prefix)


def test_a_tsv_line_without_two_fields_names_path_and_line(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("ein Haus\ta house\nzwei\ttwo\textra\n")
    with pytest.raises(DataError, match=rf"{tsv}:2: expected 2 tab-separated fields .*found 3"):
        rows(tsv)
    tsv.write_text("ein Haus\ta house\nno tab here\n")
    with pytest.raises(DataError, match=rf"{tsv}:2: .*found 1"):
        rows(tsv)


def test_a_jsonl_line_that_is_not_json_names_path_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"de": "x", "en": "y"}\n{"de": "x", "en": \n')
    with pytest.raises(DataError, match=rf"{path}:2: not JSON"):
        rows(path)
    path.write_text('["de", "en"]\n')
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object, found list"):
        rows(path)


def test_a_jsonl_line_without_a_language_names_path_line_and_key(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"de": "x", "en": "y"}\n{"translation": {"de": "x", "fr": "y"}}\n')
    with pytest.raises(DataError, match=rf"{path}:2: 'translation' has no language key 'en'"):
        rows(path)
    path.write_text('{"de": "x", "english": "y"}\n')
    with pytest.raises(DataError, match=rf"{path}:1: no key 'en' \(keys: de, english\)"):
        rows(path)


def test_a_missing_prefix_side_names_the_expected_path(tmp_path):
    write_prefix(tmp_path)
    (tmp_path / "train.en").unlink()
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.en'}: no such file"):
        rows(tmp_path / "train")
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope.tsv'}: no such file"):
        rows(tmp_path / "nope.tsv")


@pytest.mark.parametrize("name", ["a.tsv", "a.jsonl", "prefix"])
def test_an_empty_training_file_is_an_error_naming_it(tmp_path, name):
    if name == "prefix":
        write_prefix(tmp_path, pairs=[])
        path = tmp_path / "train"
    else:
        path = tmp_path / name
        path.write_text("")
    with pytest.raises(DataError, match=r"empty corpus: .* no lines"):
        rows(path)

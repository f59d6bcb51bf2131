"""Labelled TSV / CSV / JSONL readers: what they read, and the error each hostile file gets."""

import gzip

import pytest

from seqlab.data.labelled_files import read_labelled, sorted_labels
from seqlab.errors import ConfigError, DataError


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read(path, text="text", label="label"):
    return [(r["line"], r["text"], r["label"]) for r in read_labelled(path, text, label)]


def test_the_three_formats_read_the_same_rows(tmp_path):
    tsv = _write(
        tmp_path, "a.tsv", b"\xef\xbb\xbftext\tlabel\r\nit was good\tpos\r\n\r\nmeh \t neg\r\n"
    )
    csv = _write(tmp_path, "a.csv", b'id,text,label\n1,it was good,pos\n\n2,"meh ",neg\n')
    jsonl = _write(
        tmp_path,
        "a.jsonl",
        b'{"text": "it was good", "label": "pos"}\n\n{"text": "meh", "label": "neg"}',
    )
    expected = [(2, "it was good", "pos"), (4, "meh", "neg")]
    assert _read(tsv) == _read(csv) == expected  # BOM, CRLF, blank lines; lines counted from 1
    assert _read(jsonl) == [(1, "it was good", "pos"), (3, "meh", "neg")]  # no header line


def test_csv_quoting_gz_and_integer_json_labels(tmp_path):
    csv = _write(tmp_path, "q.csv", b'label,text\n1,"say ""hi"", then\nleave"\n0,plain\n')
    assert _read(csv) == [(3, 'say "hi", then\nleave', "1"), (4, "plain", "0")]
    gz = tmp_path / "z.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"sentence": "x y", "y": 2}\n'))
    assert _read(gz, "sentence", "y") == [(1, "x y", "2")]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("h.tsv", b"sentence\tlabel\nx\t1\n", r"h\.tsv:1: no column 'text' in the header "
         r"\(columns: 'sentence', 'label'\)"),
        ("h.csv", b"text,y\nx,1\n", r"h\.csv:1: no column 'label' in the header"),
        ("f.tsv", b"text\tlabel\nok\t1\none\ttoo\tmany\n", r"f\.tsv:3: expected 2 tab-separated "
         r"fields \(as the header\), found 3"),
        ("f.csv", b"text,label\nok,1\nshort\n", r"f\.csv:3: expected 2 comma-separated fields"),
        ("e.tsv", b"text\tlabel\n  \t1\n", r"e\.tsv:2: empty text \(column 'text'\)"),
        ("e.jsonl", b'{"text": "x", "label": ""}\n', r"e\.jsonl:1: empty label"),
        ("u.tsv", b"text\tlabel\nok\t1\nbad \xff byte\t0\n", r"u\.tsv:3: invalid UTF-8"),
        ("n.jsonl", b'{"text": "x", "label": 1}\n{"text": "x",\n', r"n\.jsonl:2: not JSON"),
        ("a.jsonl", b'["x", 1]\n', r"a\.jsonl:1: not a JSON object"),
        ("k.jsonl", b'{"sentence": "x", "label": 1}\n', r"k\.jsonl:1: no key 'text' "
         r"\(keys: 'sentence', 'label'\)"),
        ("t.jsonl", b'{"text": 3, "label": 1}\n', r"t\.jsonl:1: 'text' is 3, not a string"),
        ("o.tsv", b"text\tlabel\n", r"o\.tsv: no labelled rows"),
        ("z.csv", b"", r"z\.csv: no labelled rows"),
        ("q.csv", b'text,label\n"open,1\n', r"q\.csv:\d+: "),
    ],
)  # fmt: skip
def test_hostile_files_name_file_and_line(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(DataError, match=message):
        _read(path)


def test_a_missing_file_or_unknown_format_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: no such file"):
        _read(tmp_path / "nope.tsv")
    with pytest.raises(ConfigError, match=r"data\.txt: cannot tell the format"):
        _read(_write(tmp_path, "data.txt", b"x"))


def test_labels_sort_numerically_when_all_are_integers():
    assert sorted_labels(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sorted_labels(["pos", "neg", "10"]) == ["10", "neg", "pos"]

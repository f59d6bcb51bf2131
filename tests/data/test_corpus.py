"""Tests for seqlab.data.corpus: strict manifests, the registry, and verified, idempotent fetching.

Fetching is tested on tiny corpora the tests write themselves (a fake mirror folder, and a local
HTTP server for downloads), and once against the real mirror (`corpus` marker, skipped without it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from seqlab.data import corpus as corpus_mod
from seqlab.data.corpus import (
    FORMATS,
    Manifest,
    cache_dir,
    corpus_path,
    fetch_corpus,
    list_corpora,
    load_manifest,
    manifest_dir,
    mirror_dir,
    parse_manifest,
)
from seqlab.errors import ChecksumError, ConfigError, DataError
from tests.conftest import REPO, corpus_mirror
from tests.data.test_fetch import serve

EXPECTED = {"iwslt14-de-en", "multi30k", "sst2", "tatoeba-fra-eng", "timemachine", "wikitext-2"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_text(name: str = "tiny", files: str | None = None, **overrides: str | None) -> str:
    """A manifest's TOML text (one small file entry unless `files` is given)."""
    if files is None:
        files = file_entry("a.en", "train", "en", b"a\n", b"a\n")
    top = {
        "name": f'"{name}"',
        "description": '"a tiny corpus"',
        "languages": '["en", "de"]',
        "splits": '["train"]',
        "licence": '"CC0"',
        "citation": '"nobody"',
        "homepage": '"https://example.org"',
        "format": '"parallel"',
    }
    top.update(overrides)
    return "".join(f"{k} = {v}\n" for k, v in top.items() if v is not None) + files


def file_entry(path: str, split: str, lang: str, content: bytes, stored: bytes, **extra) -> str:
    fields = {
        "path": path,
        "split": split,
        "lang": lang,
        "sha256": sha(content),
        "mirror": f"tiny/{path}.gz",
        "mirror_sha256": sha(stored),
        "url": f"https://example.org/{path}.gz",
        **extra,
    }
    body = "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n" for k, v in fields.items()
    ).replace("'", '"')
    return "\n[[files]]\n" + body


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Manifest, Path, dict[str, bytes]]:
    """A two-language, two-split corpus with its gzipped files in a fake mirror folder."""
    texts = {
        "train.en": b"a dog runs .\ntwo men\n",
        "train.de": b"ein Hund rennt .\nzwei M\xc3\xa4nner\n",
        "val.en": b"a cat\n",
        "val.de": b"eine Katze\n",
    }
    mirror = tmp_path / "mirror"
    (mirror / "tiny").mkdir(parents=True)
    entries = ""
    for path, content in texts.items():
        stored = gzip.compress(content, mtime=0)
        (mirror / "tiny" / f"{path}.gz").write_bytes(stored)
        split, lang = path.split(".")
        entries += file_entry(path, split, lang, content, stored)
    toml = tmp_path / "manifests" / "tiny.toml"
    toml.parent.mkdir()
    toml.write_text(manifest_text(files=entries, splits='["train", "val"]'), encoding="utf-8")
    return parse_manifest(toml), mirror, texts


# --- the bundled manifests -------------------------------------------------------------------


def test_every_bundled_manifest_loads_and_is_complete():
    manifests = list_corpora()
    assert {m.name for m in manifests} == EXPECTED
    assert [m.name for m in manifests] == sorted(m.name for m in manifests)
    for m in manifests:
        assert m.format in FORMATS and m.licence and m.citation and m.homepage.startswith("http")
        for split in m.splits:
            langs = m.languages if m.format == "parallel" else (None,)
            for lang in langs:
                f = m.file(split, lang)  # exactly one file per split (and language)
                assert len(f.sha256) == 64 and len(f.mirror_sha256) == 64
                assert f.url.startswith(("http://", "https://"))
                assert f.mirror.startswith(f"{m.name}/")


def test_iwslt_files_say_they_cannot_be_downloaded():
    m = load_manifest("iwslt14-de-en")
    assert all(not f.downloadable and "prepare-iwslt14.sh" in f.note for f in m.files)
    assert {f.split for f in m.files} == {"valid", "test", "valid-bpe", "test-bpe"}


def test_unknown_corpus_lists_known_names_and_closest_match():
    with pytest.raises(DataError) as info:
        load_manifest("multi30")
    message = str(info.value)
    assert all(name in message for name in EXPECTED) and "did you mean 'multi30k'" in message


def test_missing_split_or_language_names_corpus_and_what_exists():
    m = load_manifest("multi30k")
    with pytest.raises(DataError, match=r"'multi30k'.*'valid'.*train, val, test_2016_flickr"):
        m.file("valid", "en")
    with pytest.raises(DataError, match="several files; give a language"):
        m.file("train")
    assert m.files_for("valid") == [] and len(m.files_for("train")) == 3


# --- strict manifest parsing -------------------------------------------------------------------


def write_manifest(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_top_level_key_names_file_and_key(tmp_path):
    path = write_manifest(tmp_path, manifest_text(colour='"blue"'))
    with pytest.raises(ConfigError, match=r"tiny\.toml.*unknown key 'colour'"):
        parse_manifest(path)


def test_missing_key_names_file_and_key(tmp_path):
    path = write_manifest(tmp_path, manifest_text(licence=None))
    with pytest.raises(ConfigError, match=r"tiny\.toml.*missing key 'licence'"):
        parse_manifest(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"mirror_url": "x"}, "unknown key 'mirror_url'"),
        ({"url": "https://example.org/a.zip"}, "key 'member' is needed"),
        ({"path": "../escape"}, "key 'path' must be relative"),
        ({"split": "dev"}, "split 'dev' is not in splits"),
        ({"lang": "fr"}, "lang 'fr' is not in languages"),
        ({"sha256": "abc"}, "key 'sha256' is not 64"),
    ],
)
def test_bad_file_entries_are_config_errors(tmp_path, extra, message):
    entry = file_entry("a.en", "train", "en", b"a\n", b"a\n")
    for key, value in extra.items():
        if f"{key} = " in entry:
            entry = "\n".join(
                f'{key} = "{value}"' if line.startswith(f"{key} = ") else line
                for line in entry.split("\n")
            )
        else:
            entry += f'{key} = "{value}"\n'
    path = write_manifest(tmp_path, manifest_text(files=entry))
    with pytest.raises(ConfigError, match=message) as info:
        parse_manifest(path)
    assert "files[0]" in str(info.value)


def test_layout_is_checked(tmp_path):
    one = file_entry("a.en", "train", "en", b"a\n", b"a\n")
    twice = one + file_entry("b.en", "train", "en", b"b\n", b"b\n")
    path = write_manifest(tmp_path, manifest_text(files=twice, splits='["train"]'))
    with pytest.raises(ConfigError, match="several \\[\\[files\\]\\] for split 'train'"):
        parse_manifest(path)
    path = write_manifest(tmp_path, manifest_text(files=one, splits='["train", "val"]'))
    with pytest.raises(ConfigError, match="split 'val' has no"):
        parse_manifest(path)


def test_name_must_match_file_name(tmp_path):
    path = write_manifest(tmp_path, manifest_text(name="other"))
    with pytest.raises(ConfigError, match="expected 'tiny'"):
        parse_manifest(path)


def test_manifest_dir_and_cache_dir_follow_the_environment(tmp_path, monkeypatch):
    write_manifest(tmp_path, manifest_text())
    monkeypatch.setenv("SEQLAB_MANIFESTS", str(tmp_path))
    assert manifest_dir() == tmp_path and [m.name for m in list_corpora()] == ["tiny"]
    monkeypatch.delenv("SEQLAB_MANIFESTS")
    assert manifest_dir() == REPO / "corpora"
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SEQLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "seqlab"
    monkeypatch.setenv("SEQLAB_CORPUS_MIRROR", str(tmp_path / "absent"))
    assert mirror_dir() is None


# --- fetching from a (fake) mirror ------------------------------------------------------------


def test_fetch_from_mirror_unpacks_verifies_and_is_idempotent(tiny, tmp_path, monkeypatch):
    manifest, mirror, texts = tiny
    folder = fetch_corpus(manifest, cache=tmp_path / "cache", mirror=mirror, progress=False)
    assert folder == tmp_path / "cache" / "corpora" / "tiny"
    for path, content in texts.items():
        assert (folder / path).read_bytes() == content

    def boom(*args, **kwargs):
        raise AssertionError("a fresh file was fetched again")

    monkeypatch.setattr(corpus_mod, "unpack_gzip", boom)
    assert fetch_corpus(manifest, cache=tmp_path / "cache", mirror=mirror) == folder
    monkeypatch.undo()
    (folder / "val.en.sha256").unlink()  # no stamp: fetched again
    (folder / "train.de").write_bytes(b"tampered\n")  # size differs from the stamp: fetched again
    fetch_corpus(manifest, cache=tmp_path / "cache", mirror=mirror, progress=False)
    assert (folder / "train.de").read_bytes() == texts["train.de"]
    assert (folder / "val.en.sha256").read_text().split()[0] == sha(texts["val.en"])


def test_corrupt_mirror_file_is_a_checksum_error_and_nothing_is_kept(tiny, tmp_path):
    manifest, mirror, _ = tiny
    bad = mirror / "tiny" / "val.de.gz"
    bad.write_bytes(gzip.compress(b"eine Kaze\n"))
    with pytest.raises(ChecksumError, match=str(bad)) as info:
        corpus_path(manifest, "val", "de", cache=tmp_path / "cache", mirror=mirror, progress=False)
    assert sha(bad.read_bytes()) in str(info.value)
    folder = tmp_path / "cache" / "corpora" / "tiny"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_corpus_path_fetches_only_that_file(tiny, tmp_path):
    manifest, mirror, texts = tiny
    path = corpus_path(manifest, "val", "en", cache=tmp_path / "c", mirror=mirror, progress=False)
    assert path.read_bytes() == texts["val.en"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["val.en", "val.en.sha256"]


def test_no_usable_download_and_no_mirror_says_so(tiny, tmp_path):
    _, _, texts = tiny
    note = "output of prepare-iwslt14.sh; cannot be re-derived by a plain download"
    entry = file_entry("val.en", "val", "en", texts["val.en"], b"", note=note, downloadable=False)
    path = write_manifest(tmp_path, manifest_text(files=entry, splits='["val"]'))
    with pytest.raises(DataError, match=r"no usable download.*prepare-iwslt14\.sh.*tiny/val\.en"):
        fetch_corpus(parse_manifest(path), cache=tmp_path / "c", mirror=tmp_path / "nothing")


# --- fetching by download ----------------------------------------------------------------------


def test_fetch_downloads_gz_zip_member_and_plain_files(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    texts = {"a.en": b"hello\n", "a.de": b"hallo\n", "b.en": b"plain\n"}
    (site / "a.en.gz").write_bytes(gzip.compress(texts["a.en"]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("pack/a.de", texts["a.de"])
    (site / "pack.zip").write_bytes(buffer.getvalue())
    (site / "b.en").write_bytes(texts["b.en"])
    with serve(site) as url:
        entries = (
            file_entry("a.en", "train", "en", texts["a.en"], b"", url=f"{url}/a.en.gz")
            + file_entry(
                "a.de", "train", "de", texts["a.de"], b"", url=f"{url}/pack.zip", member="pack/a.de"
            )
            + file_entry("b.en", "val", "en", texts["b.en"], b"", url=f"{url}/b.en")
        )
        text = manifest_text(files=entries, splits='["train", "val"]')
        manifest = parse_manifest(write_manifest(tmp_path, text))
        folder = fetch_corpus(manifest, cache=tmp_path / "c", mirror=None, progress=False)
    for path, content in texts.items():
        assert (folder / path).read_bytes() == content
    assert list((tmp_path / "c" / "downloads").iterdir()) == []  # scratch archives removed


def test_download_with_wrong_content_is_a_checksum_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.en").write_bytes(b"not what the manifest says\n")
    with serve(site) as url:
        entry = file_entry("a.en", "train", "en", b"expected\n", b"", url=f"{url}/a.en")
        manifest = parse_manifest(write_manifest(tmp_path, manifest_text(files=entry)))
        with pytest.raises(ChecksumError, match=sha(b"expected\n")):
            fetch_corpus(manifest, cache=tmp_path / "c", mirror=tmp_path / "none", progress=False)
    assert list((tmp_path / "c" / "corpora" / "tiny").iterdir()) == []


# --- the real mirror ---------------------------------------------------------------------------


@pytest.fixture
def mirror() -> Path:
    found = corpus_mirror()
    if found is None:
        pytest.skip("no corpus mirror")
    return found


@pytest.mark.corpus
def test_manifest_hashes_equal_the_mirror_sha256sums(mirror):
    sums = {}
    for line in (mirror / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name] = digest
    for m in list_corpora():
        for f in m.files:
            assert sums[f.mirror] == f.mirror_sha256, (m.name, f.path)
            if f.url_sha256 and f.url.endswith(".gz"):
                assert f.url_sha256 == f.mirror_sha256


@pytest.mark.corpus
def test_fetch_timemachine_from_the_mirror(mirror, tmp_path, monkeypatch):
    folder = fetch_corpus("timemachine", cache=tmp_path, mirror=mirror, progress=False)
    text = (folder / "timemachine.txt").read_bytes()
    assert len(text) == 178_979 and text.startswith(b"The Time Machine, by H. G. Wells [1898]")
    monkeypatch.setattr(corpus_mod, "sha256_file", lambda p: pytest.fail("mirror hashed again"))
    assert fetch_corpus("timemachine", cache=tmp_path, mirror=mirror) == folder


def test_require_format_names_the_key_the_corpus_and_both_layouts():
    manifest = load_manifest("multi30k")
    manifest.require_format(manifest.format, "unused")  # the right layout passes
    with pytest.raises(ConfigError) as info:
        manifest.require_format("tsv-labelled", "classification needs a 'tsv-labelled' one")
    message = str(info.value)
    assert "data.corpus = 'multi30k'" in message and f"'{manifest.format}' corpus" in message
    assert message.endswith("classification needs a 'tsv-labelled' one")

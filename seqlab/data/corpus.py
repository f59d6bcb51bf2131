"""Corpus manifests (corpora/*.toml) and fetching a corpus into the local cache, verified.

A manifest names every file of a corpus with the sha256 of its uncompressed content, where the
local mirror keeps it (`mirror`, `mirror_sha256`) and where it can be downloaded (`url`, optional
`url_sha256`, optional archive `member`). `fetch_corpus` makes the files available uncompressed
under `<cache>/corpora/<name>/`: from the mirror folder when it has them (`SEQLAB_CORPUS_MIRROR`),
else by download; each file's content sha256 is verified before it is renamed into place, and a
small `<file>.sha256` stamp written afterwards makes the next call a no-op. Manifests are read
strictly: an unknown or missing key is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from seqlab.data.fetch import copy_verified, download, extract_member, sha256_file, unpack_gzip
from seqlab.errors import ChecksumError, ConfigError, DataError

logger = logging.getLogger(__name__)

FORMATS = ("parallel", "tsv-pairs", "lines", "tsv-labelled")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# key -> (expected type, required)
_TOP_KEYS = {
    "name": (str, True),
    "description": (str, True),
    "languages": (list, True),
    "splits": (list, True),
    "licence": (str, True),
    "citation": (str, True),
    "homepage": (str, True),
    "format": (str, True),
    "files": (list, True),
    "note": (str, False),
}
_FILE_KEYS = {
    "path": (str, True),
    "split": (str, True),
    "lang": (str, False),
    "sha256": (str, True),
    "mirror": (str, True),
    "mirror_sha256": (str, True),
    "url": (str, True),
    "url_sha256": (str, False),
    "member": (str, False),
    "note": (str, False),
    "downloadable": (bool, False),
}


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus, as its manifest's `[[files]]` entry describes it."""

    path: str  # relative path of the uncompressed file inside the corpus folder
    split: str
    sha256: str  # of the uncompressed content
    mirror: str  # path relative to the mirror root
    mirror_sha256: str  # of the stored (usually gzipped) mirror file
    url: str  # canonical download address
    lang: str | None = None
    url_sha256: str | None = None  # of the downloaded file, when known
    member: str | None = None  # path inside the archive at `url`
    note: str = ""
    downloadable: bool = True  # False: `url` is where the data originates, not this exact file


@dataclass(frozen=True)
class Manifest:
    """A corpus: its metadata and files (see corpora/README.md for the format)."""

    name: str
    description: str
    languages: tuple[str, ...]
    splits: tuple[str, ...]
    licence: str
    citation: str
    homepage: str
    format: str
    files: tuple[CorpusFile, ...]
    note: str = ""

    def files_for(self, split: str, lang: str | None = None) -> list[CorpusFile]:
        """The files of `split` (of language `lang` when given); empty when there are none."""
        return [f for f in self.files if f.split == split and (lang is None or f.lang == lang)]

    def require_format(self, fmt: str, reader: str) -> None:
        """ConfigError naming `data.corpus` unless this corpus has layout `fmt`.

        `reader` ends the message: who needs the layout and what to use instead.
        """
        if self.format != fmt:
            raise ConfigError(f"data.corpus = '{self.name}' is a '{self.format}' corpus; {reader}")

    def require_splits(self, splits: dict[str, str | None]) -> None:
        """DataError naming the recipe key of the first split (key -> split, None: unused) this
        corpus lacks; call it before fetching, so a typo costs no download."""
        for key, split in splits.items():
            if split is not None and not self.files_for(split):
                raise DataError(
                    f"corpus '{self.name}' has no split '{split}' ({key}); "
                    f"splits: {', '.join(self.splits)}"
                )

    def file(self, split: str, lang: str | None = None) -> CorpusFile:
        """The single file of `split` (and `lang`); DataError naming what exists otherwise."""
        found = self.files_for(split, lang)
        if len(found) == 1:
            return found[0]
        where = f"split '{split}'" + (f", language '{lang}'" if lang else "")
        if not found:
            raise DataError(
                f"corpus '{self.name}' has no file for {where} "
                f"(splits: {', '.join(self.splits)}; languages: {', '.join(self.languages)})"
            )
        langs = ", ".join(str(f.lang) for f in found)
        raise DataError(
            f"corpus '{self.name}': {where} has several files; give a language ({langs})"
        )


def manifest_dir() -> Path:
    """Where manifests live: $SEQLAB_MANIFESTS, else the wheel's seqlab/_corpora, else corpora/."""
    env = os.environ.get("SEQLAB_MANIFESTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    bundled = here.parents[1] / "_corpora"
    return bundled if bundled.is_dir() else here.parents[2] / "corpora"


def cache_dir() -> Path:
    """The cache root: $SEQLAB_CACHE, else $XDG_CACHE_HOME/seqlab, else ~/.cache/seqlab."""
    if os.environ.get("SEQLAB_CACHE"):
        return Path(os.environ["SEQLAB_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "seqlab"
    return Path.home() / ".cache" / "seqlab"


def mirror_dir() -> Path | None:
    """The local corpus mirror, $SEQLAB_CORPUS_MIRROR, when it is set and exists."""
    env = os.environ.get("SEQLAB_CORPUS_MIRROR")
    return Path(env) if env and Path(env).is_dir() else None


def _check_keys(table: dict, spec: dict, where: str) -> None:
    for key in table:
        if key not in spec:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(spec)})")
    for key, (kind, required) in spec.items():
        if key not in table:
            if required:
                raise ConfigError(f"{where}: missing key '{key}'")
            continue
        value = table[key]
        if not isinstance(value, kind) or (
            kind is list and key != "files" and not all(isinstance(v, str) for v in value)
        ):
            raise ConfigError(f"{where}: key '{key}' must be a {kind.__name__}, got {value!r}")


def _check_file(entry: dict, where: str, langs: list, splits: list) -> CorpusFile:
    _check_keys(entry, _FILE_KEYS, where)
    for key in ("sha256", "mirror_sha256", "url_sha256"):
        if key in entry and not _HEX64.fullmatch(entry[key]):
            raise ConfigError(f"{where}: key '{key}' is not 64 lowercase hex digits")
    path = PurePosixPath(entry["path"])
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ConfigError(f"{where}: key 'path' must be relative inside the corpus folder")
    if entry["split"] not in splits:
        raise ConfigError(f"{where}: split '{entry['split']}' is not in splits {splits}")
    if "lang" in entry and entry["lang"] not in langs:
        raise ConfigError(f"{where}: lang '{entry['lang']}' is not in languages {langs}")
    url_path = urlparse(entry["url"]).path
    if (
        entry.get("downloadable", True)
        and url_path.endswith(ARCHIVE_SUFFIXES)
        and "member" not in entry
    ):
        raise ConfigError(f"{where}: url is an archive: key 'member' is needed")
    return CorpusFile(**entry)


def _check_layout(path: Path, kind: str, splits: list, files: list[CorpusFile]) -> None:
    """Distinct paths; one file per split (per language for parallel corpora)."""
    if len({f.path for f in files}) != len(files):
        raise ConfigError(f"{path}: two [[files]] entries share a 'path'")
    if kind == "parallel" and any(f.lang is None for f in files):
        raise ConfigError(f"{path}: a parallel corpus needs key 'lang' in every [[files]] entry")
    keys = [(f.split, f.lang if kind == "parallel" else None) for f in files]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(f"{path}: several [[files]] for split '{key[0]}'")
    for split in splits:
        if split not in {f.split for f in files}:
            raise ConfigError(f"{path}: split '{split}' has no [[files]] entry")


def parse_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate one manifest file; ConfigError naming the file and key when invalid."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read manifest: {e}") from e
    _check_keys(table, _TOP_KEYS, str(path))
    if table["name"] != path.stem:
        raise ConfigError(f"{path}: key 'name' is '{table['name']}', expected '{path.stem}'")
    if table["format"] not in FORMATS:
        raise ConfigError(f"{path}: key 'format' must be one of {', '.join(FORMATS)}")
    files = []
    for i, entry in enumerate(table["files"]):
        where = f"{path}: files[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table ([[files]])")
        files.append(_check_file(entry, where, table["languages"], table["splits"]))
    _check_layout(path, table["format"], table["splits"], files)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return Manifest(**{**fields, "files": tuple(files)})


def list_corpora() -> list[Manifest]:
    """Every manifest in `manifest_dir()`, sorted by name."""
    return sorted((parse_manifest(p) for p in manifest_dir().glob("*.toml")), key=lambda m: m.name)


def load_manifest(name: str) -> Manifest:
    """The manifest of corpus `name` (or of a `.toml` path); DataError listing known names."""
    if name.endswith(".toml") and Path(name).is_file():
        return parse_manifest(name)
    path = manifest_dir() / f"{name}.toml"
    if path.is_file():
        return parse_manifest(path)
    known = sorted(p.stem for p in manifest_dir().glob("*.toml"))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise DataError(
        f"unknown corpus '{name}' (known: {', '.join(known) or 'none'} in {manifest_dir()}){hint}"
    )


def _stamp(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _is_fresh(dest: Path, sha256: str) -> bool:
    """True when `dest` exists and its stamp records `sha256` and the file's current size."""
    try:
        recorded = _stamp(dest).read_text(encoding="ascii").split()
        return recorded == [sha256, str(dest.stat().st_size)]
    except (OSError, UnicodeDecodeError):
        return False


def _write_stamp(dest: Path, sha256: str) -> None:
    text = f"{sha256} {dest.stat().st_size}\n"
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".stamp")
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, _stamp(dest))


def _from_mirror(source: Path, f: CorpusFile, dest: Path) -> None:
    actual = sha256_file(source)
    if actual != f.mirror_sha256:
        raise ChecksumError(
            f"{source}: sha256 mismatch for the mirror file: expected {f.mirror_sha256}, "
            f"got {actual}; nothing was kept"
        )
    if source.suffix == ".gz":
        unpack_gzip(source, dest, expected_sha256=f.sha256)
    else:
        copy_verified(source, dest, expected_sha256=f.sha256)


def _from_url(f: CorpusFile, dest: Path, downloads: Path, progress: bool) -> None:
    url_path = urlparse(f.url).path
    if f.member is None and not url_path.endswith(".gz"):  # a plain file: download in place
        download(f.url, dest, expected_sha256=f.url_sha256 or f.sha256, progress=progress)
        return
    key = hashlib.sha256(f.url.encode()).hexdigest()[:12]
    archive = downloads / f"{key}-{PurePosixPath(url_path).name or 'download'}"
    if not archive.is_file():  # several members of one archive share the download
        download(f.url, archive, expected_sha256=f.url_sha256, progress=progress)
    try:
        if f.member is not None:
            extract_member(archive, f.member, dest, expected_sha256=f.sha256)
        else:
            unpack_gzip(archive, dest, expected_sha256=f.sha256)
    except ChecksumError:
        archive.unlink(missing_ok=True)
        raise


def _fetch_file(
    manifest: Manifest,
    f: CorpusFile,
    folder: Path,
    mirror: Path | None,
    downloads: Callable[[], Path],
    progress: bool,
) -> None:
    """Make one file fresh: skip it when stamped, else take it from the mirror or its url."""
    dest = folder / f.path
    if _is_fresh(dest, f.sha256):
        return
    source = mirror / f.mirror if mirror is not None else None
    if source is not None and source.is_file():
        if progress:
            logger.info("%s/%s: from mirror %s", manifest.name, f.path, source)
        _from_mirror(source, f, dest)
    elif not f.downloadable:
        where = (
            f"{mirror} lacks {f.mirror}" if mirror else "no mirror is set (SEQLAB_CORPUS_MIRROR)"
        )
        raise DataError(
            f"corpus '{manifest.name}', file {f.path}: no usable download and {where}. "
            f"{f.note or f.url} Point SEQLAB_CORPUS_MIRROR at a folder holding {f.mirror}."
        )
    else:
        if progress:
            logger.info("%s/%s: downloading %s", manifest.name, f.path, f.url)
        _from_url(f, dest, downloads(), progress)
    _write_stamp(dest, f.sha256)


def _fetch(
    manifest: Manifest,
    files: list[CorpusFile] | tuple[CorpusFile, ...],
    cache: Path | None,
    mirror: Path | None,
    progress: bool,
) -> Path:
    """Make `files` of `manifest` available under `<cache>/corpora/<name>/`; return the folder."""
    folder = (Path(cache) if cache is not None else cache_dir()) / "corpora" / manifest.name
    mirror = Path(mirror) if mirror is not None else mirror_dir()
    made: list[Path] = []

    def downloads() -> Path:  # a private scratch folder, created only when a download happens
        if not made:
            root = folder.parent.parent / "downloads"
            root.mkdir(parents=True, exist_ok=True)
            made.append(Path(tempfile.mkdtemp(dir=root, prefix=f"{manifest.name}-")))
        return made[0]

    try:
        for f in files:
            _fetch_file(manifest, f, folder, mirror, downloads, progress)
    finally:
        for scratch in made:
            shutil.rmtree(scratch, ignore_errors=True)
    return folder


def fetch_corpus(
    name: str | Manifest,
    *,
    cache: Path | None = None,
    mirror: Path | None = None,
    progress: bool = True,
) -> Path:
    """Make every file of a corpus available uncompressed; return `<cache>/corpora/<name>/`.

    Each file comes from the mirror (`mirror`, default `mirror_dir()`) when the mirror has it, else
    from its `url`; its content sha256 is verified before it is renamed into place. Files already
    fetched (a matching `<file>.sha256` stamp) are skipped, so a second call is cheap.

    Raises:
        DataError: unknown corpus, a failed download, or a file with no usable download that the
            mirror lacks. ChecksumError: a mirror file or download does not match the manifest.
    """
    manifest = name if isinstance(name, Manifest) else load_manifest(name)
    return _fetch(manifest, manifest.files, cache, mirror, progress)


def corpus_path(
    name: str | Manifest,
    split: str,
    lang: str | None = None,
    *,
    cache: Path | None = None,
    mirror: Path | None = None,
    progress: bool = True,
) -> Path:
    """The local path of one corpus file (fetching only that file if needed)."""
    manifest = name if isinstance(name, Manifest) else load_manifest(name)
    f = manifest.file(split, lang)
    return _fetch(manifest, [f], cache, mirror, progress) / f.path

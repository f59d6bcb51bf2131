"""Getting bytes onto disk safely: download, gunzip, extract one archive member, all verified.

Every function here writes through `_write_verified`: the bytes go to a temporary file in the
destination's folder, their sha256 is computed on the way, and only a file whose hash matches the
expected one is renamed into place with `os.replace` (atomic on POSIX). On any failure (network
error, checksum mismatch, corrupt archive, KeyboardInterrupt) the temporary file is removed, so a
destination path either holds a complete, verified file or does not exist. Archive members are
looked up by name and refused when the name could point outside the target folder (absolute
paths, `..`) or when the entry is not a regular file (tar symlinks, hard links, devices).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import posixpath
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from seqlab.errors import ChecksumError, DataError, WriteError, is_write_failure, why_unwritable

CHUNK = 1 << 20  # bytes per read while streaming
TIMEOUT_S = 60.0  # socket timeout for a download
USER_AGENT = "seqlab-corpus-fetch/0.1 (python urllib)"


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_verified(
    chunks: Iterable[bytes], dest: Path, expected_sha256: str | None, what: str
) -> str:
    """Write `chunks` to a temp file beside `dest`, check its sha256, then rename it to `dest`.

    Args:
        chunks: the content, streamed.
        dest: final path; its folder is created if missing.
        expected_sha256: hex digest the content must have, or None to accept any content.
        what: how error messages name the source (a URL, an archive member).

    Returns:
        The sha256 of the content written.

    Raises:
        ChecksumError: the content's sha256 differs from `expected_sha256` (nothing is kept).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.lower():
            raise ChecksumError(
                f"{what}: sha256 mismatch for {dest}: expected {expected_sha256}, got {actual}; "
                "the file was not kept"
            )
        os.replace(tmp, dest)
        return actual
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if is_write_failure(error):
            raise WriteError(
                f"{dest}: could not be written: {why_unwritable(error)}; nothing was kept"
            ) from error
        raise


def copy_verified(
    src: str | os.PathLike, dest: str | os.PathLike, *, expected_sha256: str | None = None
) -> str:
    """Copy `src` to `dest` atomically, verifying the copied bytes' sha256. Returns the sha256."""
    src = Path(src)
    try:
        with open(src, "rb") as f:
            return _write_verified(
                iter(lambda: f.read(CHUNK), b""), Path(dest), expected_sha256, str(src)
            )
    except FileNotFoundError as e:
        raise DataError(f"{src}: no such file") from e


def _response_chunks(response: http.client.HTTPResponse, url: str, bar: tqdm) -> Iterator[bytes]:
    """Stream a response body, failing if it ends before its Content-Length."""
    received = 0
    while True:
        chunk = response.read(CHUNK)
        if not chunk:
            break
        received += len(chunk)
        bar.update(len(chunk))
        yield chunk
    expected = bar.total
    if expected is not None and received != expected:
        raise DataError(f"{url}: transfer ended after {received} of {expected} bytes")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`: streamed to a temp file, checked, then renamed into place.

    A progress bar (bytes, total from Content-Length) goes to stderr when `progress` is True.

    Raises:
        DataError: the URL cannot be fetched (HTTP error, network error, truncated transfer);
            the message names the URL. No partial file is left.
        ChecksumError: the content's sha256 differs from `expected_sha256`; the message names the
            URL and both hashes, and the bad file is not kept.
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                _write_verified(_response_chunks(response, url, bar), dest, expected_sha256, url)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        raise DataError(f"{url}: download failed: {e}") from e
    return dest


def _gzip_chunks(src: Path) -> Iterator[bytes]:
    try:
        with gzip.open(src, "rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{src}: not a readable gzip file: {e}") from e


def unpack_gzip(
    src: str | os.PathLike, dest: str | os.PathLike, *, expected_sha256: str | None = None
) -> Path:
    """Decompress the gzip file `src` to `dest` atomically, verifying the content's sha256.

    Raises:
        DataError: `src` is missing or not a valid gzip stream.
        ChecksumError: the decompressed content's sha256 differs from `expected_sha256`.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    _write_verified(_gzip_chunks(src), dest, expected_sha256, f"{src} (gunzipped)")
    return dest


def _check_member_name(archive: Path, member: str, folder: Path) -> str:
    """Refuse a member name that is absolute or resolves outside `folder`; return it normalised."""
    name = member.replace("\\", "/")
    normal = posixpath.normpath(name)
    target = (folder / normal).resolve()
    inside = target == folder.resolve() or folder.resolve() in target.parents
    if name.startswith("/") or posixpath.isabs(normal) or normal.startswith("..") or not inside:
        raise DataError(
            f"{archive}: refusing member '{member}': its path would land outside {folder}"
        )
    return normal


def _zip_chunks(archive: Path, member: str, wanted: str) -> Iterator[bytes]:
    with zipfile.ZipFile(archive) as zf:
        infos = {posixpath.normpath(i.filename): i for i in zf.infolist() if not i.is_dir()}
        info = infos.get(wanted)
        if info is None:
            raise DataError(f"{archive}: no member '{member}' (has: {_some(infos)})")
        mode = (info.external_attr >> 16) & 0o170000
        if mode and mode != 0o100000:  # a stored unix file type other than "regular file"
            raise DataError(f"{archive}: refusing member '{member}': not a regular file")
        with zf.open(info) as f:
            yield from iter(lambda: f.read(CHUNK), b"")


def _tar_chunks(archive: Path, member: str, wanted: str) -> Iterator[bytes]:
    with tarfile.open(archive, "r:*") as tf:
        infos = {posixpath.normpath(i.name): i for i in tf.getmembers()}
        info = infos.get(wanted)
        if info is None:
            raise DataError(f"{archive}: no member '{member}' (has: {_some(infos)})")
        if not info.isfile():  # symlink, hard link, device, folder: refused
            raise DataError(
                f"{archive}: refusing member '{member}': not a regular file (links are refused)"
            )
        f: BinaryIO | None = tf.extractfile(info)
        assert f is not None  # a regular file always has data
        yield from iter(lambda: f.read(CHUNK), b"")


def _some(names: dict) -> str:
    shown = sorted(names)[:10]
    return ", ".join(shown) + (", ..." if len(names) > 10 else "") if shown else "nothing"


def extract_member(
    archive: str | os.PathLike,
    member: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
) -> Path:
    """Extract one member of a .zip or .tar(.gz/.tgz/.bz2/.xz) archive to `dest`, atomically.

    The member name is checked as if the archive were unpacked into `dest`'s folder: absolute
    names and names climbing out with `..` are refused, and so are tar entries that are not
    regular files (symlinks, hard links). The content's sha256 is verified before the rename.

    Raises:
        DataError: unreadable archive, missing member, or a refused member (the message names
            the archive and the member).
        ChecksumError: the member's sha256 differs from `expected_sha256`.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"{archive}: no such file")
    wanted = _check_member_name(archive, member, dest.parent)
    if zipfile.is_zipfile(archive):
        chunks = _zip_chunks(archive, member, wanted)
    elif tarfile.is_tarfile(archive):
        chunks = _tar_chunks(archive, member, wanted)
    else:
        raise DataError(f"{archive}: neither a zip nor a tar archive")
    try:
        _write_verified(chunks, dest, expected_sha256, f"{archive}:{member}")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: cannot read member '{member}': {e}") from e
    return dest

"""Tests for seqlab.data.fetch: downloads from a local HTTP server, checksums, safe unpacking.

Nothing here touches the network: a `http.server` on 127.0.0.1 (port 0, in a thread) serves a
temporary folder, plus two misbehaving paths (a body shorter than its Content-Length, a 404).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data import fetch
from seqlab.data.fetch import download, extract_member, sha256_file, unpack_gzip
from seqlab.errors import ChecksumError, DataError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; `/short/<n>` promises 10,000 bytes and sends `n` before hanging up."""

    def do_GET(self) -> None:
        if self.path.startswith("/short/"):
            sent = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            self.wfile.write(b"x" * sent)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1; yields the base URL (no trailing slash)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "site"
    root.mkdir()
    with serve(root) as url:
        yield root, url


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_writes_file_and_shows_progress(site, tmp_path, capsys):
    root, url = site
    data = bytes(range(256)) * 400
    (root / "blob.bin").write_bytes(data)
    dest = tmp_path / "out" / "blob.bin"
    download(f"{url}/blob.bin", dest, expected_sha256=sha(data), progress=True)
    assert dest.read_bytes() == data
    err = capsys.readouterr().err
    assert "blob.bin" in err and "100%" in err and "100k" in err
    assert leftovers(dest.parent) == ["blob.bin"]


def test_download_quiet_writes_nothing_on_stderr(site, tmp_path, capsys):
    root, url = site
    (root / "a.txt").write_bytes(b"hello\n")
    download(f"{url}/a.txt", tmp_path / "a.txt", progress=False)
    assert capsys.readouterr().err == ""


def test_checksum_mismatch_names_both_hashes_and_keeps_nothing(site, tmp_path):
    root, url = site
    (root / "a.txt").write_bytes(b"actual content\n")
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download(f"{url}/a.txt", tmp_path / "dl" / "a.txt", expected_sha256=wrong, progress=False)
    message = str(info.value)
    assert wrong in message and sha(b"actual content\n") in message and f"{url}/a.txt" in message
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("sent", [0, 100])
def test_truncated_transfer_leaves_no_partial_file(site, tmp_path, sent):
    _, url = site
    with pytest.raises(DataError, match=f"{url}/short/{sent}"):
        download(f"{url}/short/{sent}", tmp_path / "dl" / "x.bin", progress=False)
    assert leftovers(tmp_path / "dl") == []


def test_http_error_names_the_url(site, tmp_path):
    _, url = site
    with pytest.raises(DataError, match=f"{url}/missing.gz"):
        download(f"{url}/missing.gz", tmp_path / "x.gz", progress=False)
    assert not (tmp_path / "x.gz").exists()


def test_unreachable_host_is_a_data_error(tmp_path):
    with serve(tmp_path) as url:
        pass  # the server is shut down: nothing listens on that port any more
    with pytest.raises(DataError, match="download failed"):
        download(f"{url}/x", tmp_path / "x", progress=False)


def test_keyboard_interrupt_mid_transfer_leaves_no_partial_file(site, tmp_path, monkeypatch):
    root, url = site
    (root / "big.bin").write_bytes(b"y" * 5000)

    def interrupted(response, url, bar):
        yield response.read(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "_response_chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download(f"{url}/big.bin", tmp_path / "dl" / "big.bin", progress=False)
    assert leftovers(tmp_path / "dl") == []


def test_unpack_gzip_verifies_content(tmp_path):
    content = "Zwei Männer\tim Wasser.\n".encode()
    src = tmp_path / "a.gz"
    src.write_bytes(gzip.compress(content))
    out = unpack_gzip(src, tmp_path / "out" / "a", expected_sha256=sha(content))
    assert out.read_bytes() == content
    with pytest.raises(ChecksumError, match=sha(content)):
        unpack_gzip(src, tmp_path / "bad" / "a", expected_sha256="f" * 64)
    assert leftovers(tmp_path / "bad") == []


def test_unpack_corrupt_gzip_is_a_data_error(tmp_path):
    src = tmp_path / "a.gz"
    src.write_bytes(gzip.compress(b"some text\n" * 100)[:-20])  # truncated stream
    with pytest.raises(DataError, match=str(src)):
        unpack_gzip(src, tmp_path / "out" / "a")
    assert leftovers(tmp_path / "out") == []


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=5000))
def test_unpack_gzip_round_trips_any_bytes(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("gz")
    (folder / "x.gz").write_bytes(gzip.compress(data))
    out = unpack_gzip(folder / "x.gz", folder / "x", expected_sha256=sha(data))
    assert out.read_bytes() == data and sha256_file(out) == sha(data)


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_extract_member_verifies_and_writes_only_that_member(tmp_path, kind):
    members = {"wikitext-2/wiki.valid.tokens": b" = A = \n", "wikitext-2/other": b"no\n"}
    maker = make_zip if kind == "zip" else make_tar
    archive = maker(tmp_path / f"a.{kind}", members)
    dest = tmp_path / "out" / "wiki.valid.tokens"
    data = members["wikitext-2/wiki.valid.tokens"]
    extract_member(archive, "wikitext-2/wiki.valid.tokens", dest, expected_sha256=sha(data))
    assert dest.read_bytes() == data
    assert leftovers(dest.parent) == ["wiki.valid.tokens"]
    with pytest.raises(ChecksumError):
        extract_member(
            archive, "wikitext-2/other", tmp_path / "bad" / "o", expected_sha256=sha(data)
        )
    assert leftovers(tmp_path / "bad") == []


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_missing_member_names_archive_and_member(tmp_path, kind):
    maker = make_zip if kind == "zip" else make_tar
    archive = maker(tmp_path / f"a.{kind}", {"x/a.txt": b"a\n"})
    with pytest.raises(DataError, match=r"no member 'x/b\.txt' \(has: x/a\.txt\)") as info:
        extract_member(archive, "x/b.txt", tmp_path / "b.txt")
    assert str(archive) in str(info.value)


@pytest.mark.parametrize("kind", ["zip", "tgz"])
@pytest.mark.parametrize("member", ["../evil", "/abs/evil", "a/../../evil", "..\\evil"])
def test_members_escaping_the_folder_are_refused(tmp_path, kind, member):
    maker = make_zip if kind == "zip" else make_tar
    archive = maker(tmp_path / f"a.{kind}", {member: b"pwned\n"})
    target = tmp_path / "target"
    with pytest.raises(DataError, match="refusing member") as info:
        extract_member(archive, member, target / "evil")
    assert str(archive) in str(info.value) and member in str(info.value)
    assert not (tmp_path / "evil").exists() and leftovers(target) == []


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_symlink_members_are_refused(tmp_path, kind):
    if kind == "zip":
        archive = make_zip(tmp_path / "a.zip", {}, symlinks={"data/link": "/etc/passwd"})
    else:
        archive = make_tar(tmp_path / "a.tgz", {}, links={"data/link": "/etc/passwd"})
    with pytest.raises(DataError, match="refusing member 'data/link'"):
        extract_member(archive, "data/link", tmp_path / "out" / "link")
    assert leftovers(tmp_path / "out") == []


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        extract_member(junk, "a", tmp_path / "a")


def test_a_file_size_limit_while_unpacking_names_the_file_and_keeps_nothing(tmp_path):
    import subprocess
    import sys

    (tmp_path / "big.gz").write_bytes(gzip.compress(bytes(range(256)) * 400))  # 100 KiB inside
    script = (
        "import resource, sys\n"
        "from seqlab.data.fetch import unpack_gzip\n"
        "from seqlab.errors import WriteError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    unpack_gzip(sys.argv[1], sys.argv[2])\n"
        "except WriteError as error:\n"
        "    print(error)\n"
    )
    dest = tmp_path / "out" / "big"
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "big.gz"), str(dest)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.stdout.strip() == (
        f"{dest}: could not be written: a file exceeds the file-size limit; nothing was kept"
    ), run.stderr
    assert list(dest.parent.iterdir()) == []  # no partial file, no temp file


def test_a_folder_that_runs_out_of_room_names_itself_and_is_not_kept(tmp_path):
    import errno

    from seqlab.data.atomic import atomic_folder
    from seqlab.errors import WriteError

    full = pytest.raises(WriteError, match=r"prepared: could not be written: the disk is full")
    with full, atomic_folder(tmp_path / "prepared") as partial:
        (partial / "vocab.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")  # as pyarrow raises it
    assert list(tmp_path.iterdir()) == []
    denied = pytest.raises(PermissionError, match="Permission denied")  # passed on as it is
    with denied, atomic_folder(tmp_path / "prepared"):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_file_is_written_whole_or_named_with_why_it_was_not(tmp_path):
    import errno

    from seqlab.data.atomic import atomic_file
    from seqlab.errors import WriteError

    target = tmp_path / "out.txt"
    target.write_text("old\n")
    full = pytest.raises(WriteError, match=r"out.txt: could not be written: the disk is full")
    with full, atomic_file(target) as f:
        f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as f:  # passed on, nothing kept
        f.write("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    with atomic_file(target, "wb") as f:
        f.write("ünï\n".encode())
    assert target.read_text(encoding="utf-8") == "ünï\n"
    missing = tmp_path / "no" / "out.txt"
    no_folder = pytest.raises(WriteError, match=f"cannot be written: no folder {tmp_path / 'no'}")
    with no_folder, atomic_file(missing):
        pass

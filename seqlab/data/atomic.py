"""Files and folders written whole or not at all.

`atomic_folder(outdir)` (what `seqlab export` and the prepare cache write) yields a fresh temporary
folder beside `outdir` and renames it into place once the block succeeds, so a crash or Ctrl-C never
leaves a half-written `outdir` that a reader (a rerun's cache lookup, `load_model`) would trust.
`atomic_file(path)` does the same for one file (translations, vocabularies, plots).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from seqlab.errors import CheckpointError, WriteError, is_write_failure, why_unwritable


@contextlib.contextmanager
def atomic_folder(outdir: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `outdir`; on success it becomes `outdir`.

    On an error the temporary folder is removed and `outdir` is left as it was. An existing
    non-empty `outdir` is refused unless `force`, in which case it is replaced only once the new
    folder is complete (moved aside, the new one renamed in, the old one deleted).

    Raises:
        CheckpointError: `outdir` is a file, or a non-empty folder and not `force`.
    """
    outdir = Path(outdir)
    if outdir.is_file() or (outdir.is_dir() and any(outdir.iterdir()) and not force):
        what = "a file" if outdir.is_file() else "a folder that is not empty"
        raise CheckpointError(f"{outdir}: exists and is {what}; remove it or pass --force")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_folder(outdir, "tmp")
    try:
        yield tmp
        old = None
        if outdir.is_dir() and any(outdir.iterdir()):
            old = _fresh_folder(outdir, "old")
            os.replace(outdir, old)  # onto the empty folder just made
        os.replace(tmp, outdir)  # onto a missing or empty `outdir`
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(error):  # pyarrow's and torch's writers name no file
            raise WriteError(
                f"{outdir}: could not be written: {why_unwritable(error)}; nothing was kept"
            ) from error
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a file open (`mode`: "w" for UTF-8 text, "wb") on a temp name beside `path`; once the
    block succeeds it is renamed to `path`. On an error the temp file is removed and `path` is left
    as it was.

    Raises:
        WriteError: naming `path` (not the temp name) and why: no such folder, no permission, the
            disk is full, a folder in the way.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise WriteError(f"{path}: cannot be written: no folder {path.parent}")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:  # e.g. no permission to create a file there
        raise WriteError(f"{path}: cannot be written: {why_unwritable(error)}") from error
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except OSError as error:  # a full disk, the file-size limit, a folder at `path`
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(
            f"{path}: could not be written: {why_unwritable(error)}; nothing was written"
        ) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fresh_folder(beside: Path, suffix: str) -> Path:
    """A new empty folder `.NAME.<random>.SUFFIX` beside `beside`, with the umask's permissions
    (`tempfile.mkdtemp` would make it private, and so the exported folder)."""
    while True:
        folder = beside.parent / f".{beside.name}.{secrets.token_hex(4)}.{suffix}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # pragma: no cover - 1 in 4 billion
            continue

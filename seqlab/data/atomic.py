"""A folder written whole or not at all: what `seqlab export` and the prepare cache write.

`atomic_folder(outdir)` yields a fresh temporary folder beside `outdir` and renames it into place
once the block succeeds, so a crash or Ctrl-C never leaves a half-written `outdir` that a reader
(a rerun's cache lookup, `load_model`) would trust.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

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

"""Errors a user can act on.

Every error raised for bad input (a missing file, a malformed line, an unknown recipe key, a corrupt
checkpoint) derives from `SeqlabError`; its message names the file, line or key. The CLI prints such
errors as one line on stderr and exits with status 2, never as a traceback.
"""

from __future__ import annotations

import errno


class SeqlabError(Exception):
    """Base class for errors caused by input the user can fix."""


class ConfigError(SeqlabError):
    """A recipe or override is invalid (unknown key, wrong type, bad value)."""


class DataError(SeqlabError):
    """A corpus or text file cannot be read as promised (missing, malformed, mismatched)."""


class ChecksumError(DataError):
    """A downloaded or mirrored file does not have the sha256 its manifest records."""


class CheckpointError(SeqlabError):
    """A file is not a readable seqlab checkpoint (foreign, truncated, incompatible version)."""


class UsageError(SeqlabError):
    """A command line the `seqlab` command cannot parse (unknown flag, bad flag value)."""


class WriteError(SeqlabError):
    """A file or folder could not be written (disk full, file-size limit, no permission)."""


def why_unwritable(error: BaseException) -> str:
    """Why a write failed, in words: "the disk is full" rather than "[Errno 28]"."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if isinstance(error, OSError) and error.errno == errno.EFBIG:
        return "a file exceeds the file-size limit"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    # torch's writer: "[enforce fail at inline_container.cc:...] unexpected pos ..."
    return "the write stopped short (is the disk full, or a file-size limit set?)"


def is_write_failure(error: BaseException) -> bool:
    """An OSError of a write that ran out of room: the disk, a quota, the file-size limit."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

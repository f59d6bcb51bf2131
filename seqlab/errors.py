"""Errors a user can act on.

Every error raised for bad input (a missing file, a malformed line, an unknown recipe key, a corrupt
checkpoint) derives from `SeqlabError`; its message names the file, line or key. The CLI prints such
errors as one line on stderr and exits with status 2, never as a traceback.
"""

from __future__ import annotations


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

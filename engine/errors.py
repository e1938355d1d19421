"""Errors raised by the pure engine.

The engine never raises for concurrent divergence (that is a conflict value in the
tree). It raises `FsError` when an operation is invalid against the current tree
(the SDK turns it into the matching builtin `OSError`), `CodecError` when bytes do
not decode, and `InvalidInputError` for malformed ids, names or arguments. Bugs are
assertions.
"""

from __future__ import annotations

import errno as _errno


class EngineError(Exception):
    """Raised as the base of every error the engine raises on purpose."""


class InvalidInputError(EngineError, ValueError):
    """Raised when an id, a name, a path or an argument is malformed."""


class FsError(EngineError):
    """Raised when a filesystem operation is invalid against the current tree.

    Attributes:
        errno: the POSIX error number (``errno.ENOENT`` ...).
        path: the repo-relative path the error is about, as a string.
    """

    def __init__(self, errno: int, path: str, message: str | None = None) -> None:
        self.errno = errno
        self.path = path
        self.message = message or _errno.errorcode.get(errno, str(errno))
        super().__init__(errno, f"{self.message}: {path!r}")


class CodecError(EngineError):
    """Raised when bytes are not a valid encoding: unknown version, corrupt or truncated."""

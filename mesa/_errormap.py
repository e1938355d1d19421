"""The one mapping of failures to the SDK's public errors.

- `api_error`: a transport failure to the public tree of `mesa.errors` (used by
  `mesa._gateway`, the only place that sees transport errors): a refused token is
  `AuthenticationError`, a refused grant `AuthorizationError`, a missing key, blob or
  log `NotFoundError`, a lost compare-and-set `ConflictError`, an oversize entry
  `PayloadTooLargeError`, an invalid name `InvalidOptionsError`, an unreachable server
  `MesaConnectionError`.
- `fs_error`, `os_error`, `fs_errors`, `write_refused`: what filesystem methods raise
  instead, the builtin ``OSError`` subclass for the errno (an invalid op's errno from
  the engine; a missing bookmark or change in the ``fs.*`` namespaces is ENOENT; a
  write the token grants read-only is EROFS).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from engine.errors import FsError
from mesa.errors import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    InvalidOptionsError,
    MesaConnectionError,
    MesaError,
    NotFoundError,
    PayloadTooLargeError,
)
from transports.base import (
    InvalidNameError,
    MissingError,
    PermissionDeniedError,
    RevisionMismatchError,
    TokenRejectedError,
    TransportError,
    UnavailableError,
)
from transports.base import (
    PayloadTooLargeError as TransportPayloadTooLargeError,
)


def api_error(exc: TransportError) -> MesaError:
    """Return the public error for a transport failure (see module docstring)."""
    message = str(exc)
    if isinstance(exc, TokenRejectedError):
        return AuthenticationError(message)
    if isinstance(exc, PermissionDeniedError):
        return AuthorizationError(message)
    if isinstance(exc, MissingError):
        return NotFoundError(message)
    if isinstance(exc, RevisionMismatchError):
        return ConflictError(message)
    if isinstance(exc, InvalidNameError):
        return InvalidOptionsError(message)
    if isinstance(exc, TransportPayloadTooLargeError):
        return PayloadTooLargeError(message)
    if isinstance(exc, UnavailableError):
        return MesaConnectionError(message)
    return ApiError(message)


def fs_error(exc: FsError, path: str) -> OSError:
    """Return the builtin OSError subclass for an engine filesystem error at ``path``."""
    return os_error(exc.errno, path, exc.message)


def os_error(code: int, path: str, message: str | None = None) -> OSError:
    """Return ``OSError(code)`` for ``path``; Python picks the subclass from the errno."""
    return OSError(code, message or os.strerror(code), path)


def write_refused(exc: MesaError, path: str) -> Exception:
    """Return what a filesystem write raises for a refused append: EROFS for a denied grant."""
    if isinstance(exc, AuthorizationError):
        return os_error(errno.EROFS, path, str(exc))
    return exc


@contextlib.contextmanager
def fs_errors(path: str) -> Iterator[None]:
    """Turn a missing bookmark or change into ``FileNotFoundError`` (the ``fs.*`` namespaces)."""
    try:
        yield
    except NotFoundError as exc:
        raise os_error(errno.ENOENT, path, str(exc)) from exc

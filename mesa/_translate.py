"""Turns transport and engine failures into the SDK's public errors.

One place decides the mapping, so every call site raises the same type for the
same cause: a refused token is `AuthenticationError`, a write the token grants
read-only is ``OSError(EROFS)`` on filesystem calls, an invalid op is the builtin
``OSError`` subclass for its errno.
"""

from __future__ import annotations

import errno
import os

from engine.errors import FsError, InvalidInputError
from mesa.errors import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    InvalidOptionsError,
    MesaConnectionError,
    MesaError,
    NotFoundError,
    ValidationError,
)
from transports.base import (
    InvalidNameError,
    MissingError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RevisionMismatchError,
    TokenRejectedError,
    TransportError,
    UnavailableError,
)


def api_error(exc: TransportError) -> MesaError:
    """Return the public error for a transport failure outside the filesystem API."""
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
    if isinstance(exc, PayloadTooLargeError):
        return ValidationError(message)
    if isinstance(exc, UnavailableError):
        return MesaConnectionError(message)
    return ApiError(message)


def fs_error(exc: FsError, path: str) -> OSError:
    """Return the builtin OSError subclass for an engine filesystem error at ``path``."""
    return os_error(exc.errno, path, exc.message)


def os_error(code: int, path: str, message: str | None = None) -> OSError:
    """Return ``OSError(code)`` for ``path``; Python picks the subclass from the errno."""
    return OSError(code, message or os.strerror(code), path)


def fs_transport_error(exc: TransportError, path: str) -> Exception:
    """Return the error a filesystem call raises for a transport failure."""
    if isinstance(exc, PermissionDeniedError):
        return os_error(errno.EROFS, path, str(exc))
    return api_error(exc)


def invalid(exc: InvalidInputError) -> InvalidOptionsError:
    """Return the public error for malformed input caught by the engine."""
    return InvalidOptionsError(str(exc))

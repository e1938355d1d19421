"""The public error tree of the mesa SDK.

::

    MesaError                      (code)
    ├── MissingCredentialError     no API key given, none in MESA_API_KEY, no local server key
    ├── InvalidOptionsError        also a ValueError: bad mount options, ids, names or modes
    ├── MesaConnectionError        also a ConnectionError: the server cannot be reached in time
    ├── LogCorruptError            an entry of a change's log does not decode (change, sequence)
    ├── FoldError                  a mount could not fold an entry of its change (change, sequence)
    └── ApiError                   (status_code, body) the server refused
        ├── ValidationError        400
        │   └── PayloadTooLargeError   413: an entry or record too large for the server
        ├── AuthenticationError    401: unknown key, bad or expired token
        ├── AuthorizationError     403: the token does not grant the repo
        ├── NotFoundError          404: repo, bookmark or change missing
        ├── ConflictError          409: a compare-and-set lost (retry), or the name exists
        ├── RateLimitError         429
        └── ServerError            5xx

Filesystem methods raise the builtin ``OSError`` subclasses with the POSIX errno
instead (``FileNotFoundError``, ``OSError(errno.EROFS)`` ...), as the spec's SDK does.
Reading a conflicted file never raises.
"""

from __future__ import annotations

from typing import Any


class MesaError(Exception):
    """Raised as the base of every error the SDK raises on purpose."""

    code = "MESA_ERROR"


class MissingCredentialError(MesaError):
    """Raised when no API key was given and none can be found."""

    code = "MISSING_CREDENTIAL"


class InvalidOptionsError(MesaError, ValueError):
    """Raised when options, names, ids or modes passed to the SDK are invalid."""

    code = "INVALID_OPTIONS"


class MesaConnectionError(MesaError, ConnectionError):
    """Raised when the server cannot be reached within the allowed time."""

    code = "CONNECTION_ERROR"


class LogCorruptError(MesaError):
    """Raised when an entry of a change's log does not decode; the mount stops folding there."""

    code = "LOG_CORRUPT"

    def __init__(self, change: str, seq: int, reason: str) -> None:
        self.change = change
        self.seq = seq
        super().__init__(f"change {change}: entry at sequence {seq} does not decode: {reason}")


class FoldError(MesaError):
    """Raised when a mount cannot fold an entry of its change's log; it stops folding there.

    The entry decoded, but folding it failed (or the mount failed handling what it
    folded): ``change`` and ``seq`` name it, ``reason`` says what failed. The mount's
    state is the one before that entry; every pending and later call of the mount
    raises this error.
    """

    code = "FOLD_FAILED"

    def __init__(self, change: str, seq: int, reason: str) -> None:
        self.change = change
        self.seq = seq
        self.reason = reason
        super().__init__(f"change {change}: stopped folding at sequence {seq}: {reason}")


class ApiError(MesaError):
    """Raised when the server refuses a request."""

    status_code = 500
    code = "API_ERROR"

    def __init__(self, message: str, *, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body if body is not None else {"error": {"code": self.code, "message": message}}


class ValidationError(ApiError):
    """Raised when the server rejects a request as malformed (400)."""

    status_code = 400
    code = "VALIDATION_ERROR"


class PayloadTooLargeError(ValidationError):
    """Raised when an entry or record is larger than the server accepts (413)."""

    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class AuthenticationError(ApiError):
    """Raised when the key is unknown or the token is invalid or expired (401)."""

    status_code = 401
    code = "UNAUTHENTICATED"


class AuthorizationError(ApiError):
    """Raised when the token does not grant the repo or the operation (403)."""

    status_code = 403
    code = "FORBIDDEN"


class NotFoundError(ApiError):
    """Raised when a repo, bookmark or change does not exist (404)."""

    status_code = 404
    code = "NOT_FOUND"


class ConflictError(ApiError):
    """Raised when a compare-and-set lost a race (retry) or a name already exists (409)."""

    status_code = 409
    code = "CONFLICT"


class RateLimitError(ApiError):
    """Raised when the server asks the client to slow down (429)."""

    status_code = 429
    code = "RATE_LIMITED"


class ServerError(ApiError):
    """Raised when the server failed (5xx)."""

    status_code = 500
    code = "INTERNAL_ERROR"

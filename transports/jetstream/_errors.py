"""nats-py errors as transport errors, and the JetStream API error codes this package uses.

Every nats-py call runs inside `_nats_errors`, so callers see only transport errors:
unreachable → `UnavailableError`, too large → `PayloadTooLargeError`, a JetStream API
error → `_ApiError` (a `TransportError` that keeps the codes), anything else →
`TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Final

import nats.errors
import nats.js.errors

from transports.base import PayloadTooLargeError, TransportError, UnavailableError

# JetStream API error codes.
_ERR_NO_MESSAGE: Final = 10037
_ERR_STREAM_NOT_FOUND: Final = 10059
_ERR_STREAM_NAME_IN_USE: Final = 10058
_ERR_WRONG_LAST_SEQUENCE: Final = (10071, 10164)

# nats-py errors that mean "the server cannot be reached now".
_UNREACHABLE: Final[tuple[type[BaseException], ...]] = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    # A stream that does not answer a publish: a server just restarting, not a refusal.
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
    OSError,
)

_CONNECT_FAILURES: Final[tuple[type[BaseException], ...]] = (*_UNREACHABLE, nats.errors.Error)


class _ApiError(TransportError):
    """A JetStream API error response."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        self.code = code
        self.err_code = err_code
        super().__init__(f"JetStream API error {code}/{err_code}: {description}")


# nats-py errors that mean "not connected now": nothing was sent.
_DISCONNECTED: Final[tuple[type[BaseException], ...]] = (
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
)


@contextlib.contextmanager
def _nats_errors(what: str) -> Iterator[None]:
    """Translate nats-py exceptions raised inside the block into transport errors."""
    try:
        yield
    except TransportError:
        raise
    except _DISCONNECTED as exc:
        raise UnavailableError(
            f"{what}: the connection to NATS is down (reconnecting); this call was not sent"
        ) from exc
    except _UNREACHABLE as exc:
        raise UnavailableError(f"{what}: {exc!r}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"{what}: {exc!r}") from exc
    except nats.js.errors.APIError as exc:
        raise _ApiError(exc.code or 0, exc.err_code or 0, str(exc.description)) from exc
    except nats.errors.Error as exc:
        raise TransportError(f"{what}: {exc!r}") from exc

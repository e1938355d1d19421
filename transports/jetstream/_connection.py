"""The NATS connection every concern shares, and nats-py errors as transport errors.

Invariants:

- The initial connect must succeed within ``connect_timeout_s`` (else
  `UnavailableError`, saying whether JetStream is disabled or no server completed the
  NATS handshake); afterwards nats-py reconnects forever (every 0.25 s), calls made
  while disconnected fail with `UnavailableError` after the request timeout.
- After a reconnect the server may have lost or replaced streams and consumers: every
  cache registered with `_Connection.on_reconnected` is dropped, then every open
  subscription is told to replace its consumer.
- Every nats-py call runs inside `_nats_errors`, so callers see only transport errors:
  unreachable → `UnavailableError`, too large → `PayloadTooLargeError`, a JetStream API
  error → `_ApiError` (a `TransportError` that keeps the codes), anything else →
  `TransportError`.
- Cleanup (deleting a consumer) is best effort and never raises: the server drops
  inactive consumers anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as _NatsClient

from transports.base import PayloadTooLargeError, TransportError, UnavailableError
from transports.jetstream._names import _JS_API, HEADER_RESERVE


class _Resumable(Protocol):
    """What the connection needs of a subscription it tracks (`_subscription`)."""

    def request_reset(self, reason: str) -> None:
        """Re-create the consumer from the last delivered sequence."""

    async def aclose(self) -> None:
        """Stop the subscription."""


_logger = logging.getLogger("transports.jetstream")

_CLEANUP_TIMEOUT_S: Final = 1.0
_RECONNECT_WAIT_S: Final = 0.25

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


@contextlib.contextmanager
def _nats_errors(what: str) -> Iterator[None]:
    """Translate nats-py exceptions raised inside the block into transport errors."""
    try:
        yield
    except TransportError:
        raise
    except _UNREACHABLE as exc:
        raise UnavailableError(f"{what}: {exc!r}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"{what}: {exc!r}") from exc
    except nats.js.errors.APIError as exc:
        raise _ApiError(exc.code or 0, exc.err_code or 0, str(exc.description)) from exc
    except nats.errors.Error as exc:
        raise TransportError(f"{what}: {exc!r}") from exc


class _Connection:
    """One NATS connection and its JetStream context, shared by logs, blobs and KV.

    Args:
        replicas: ``num_replicas`` of the streams and buckets created over it.
        request_timeout_s: the most one JetStream request may take.
    """

    def __init__(self, *, replicas: int, request_timeout_s: float) -> None:
        self.replicas = replicas
        self.timeout = request_timeout_s
        self.closed = False
        self.nc: Any = _NatsClient()
        self.js: Any = None
        self.subscriptions: set[_Resumable] = set()
        self._reconnect_hooks: list[Callable[[], None]] = []

    def payload_limit(self) -> int:
        """Return the largest payload a message may carry: ``max_payload`` less headers."""
        max_payload: int = self.nc.max_payload
        return max_payload - HEADER_RESERVE

    def on_reconnected(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (which drops a cache) after every reconnect, in registration order."""
        self._reconnect_hooks.append(hook)

    async def connect(self, servers: list[str], connect_timeout_s: float, **options: Any) -> None:
        """Connect to one of ``servers`` and check that JetStream answers.

        Args:
            servers: NATS URLs.
            connect_timeout_s: the most the whole attempt may take.
            **options: passed to nats-py's ``connect`` (name, user, password, token).

        Raises:
            UnavailableError: no server answered, or JetStream is not enabled, in time.
        """
        nc = self.nc
        try:
            async with asyncio.timeout(connect_timeout_s):
                await nc.connect(
                    servers=servers,
                    connect_timeout=max(0.5, connect_timeout_s / len(servers)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=_RECONNECT_WAIT_S,
                    ping_interval=10,
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **options,
                )
                self.js = nc.jetstream(timeout=self.timeout)
                await self.js.account_info()
        except _CONNECT_FAILURES as exc:
            last = nc.last_error
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, nats.js.errors.APIError | nats.errors.NoRespondersError):
                detail = "JetStream is not enabled on the server"
            elif last is None:
                detail = "no server completed the NATS handshake"
            else:
                detail = f"last error: {last!r}"
            raise UnavailableError(
                f"cannot reach NATS JetStream at {', '.join(servers)} "
                f"within {connect_timeout_s}s ({detail})"
            ) from exc

    async def _on_error(self, exc: Exception) -> None:
        _logger.debug("nats: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self.closed:
            _logger.info("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        url = self.nc.connected_url
        _logger.info("reconnected to NATS at %s", url.netloc if url is not None else "?")
        # The server may have lost or replaced streams and consumers: check again.
        for hook in self._reconnect_hooks:
            hook()
        for subscription in list(self.subscriptions):
            subscription.request_reset("reconnected")

    async def aclose(self) -> None:
        """End every subscription and close the connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        subscriptions = list(self.subscriptions)
        if subscriptions:
            await asyncio.gather(*(s.aclose() for s in subscriptions))
        with contextlib.suppress(Exception):
            await self.nc.close()

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        """Delete a consumer, best effort: the server drops inactive ones anyway."""
        if not self.nc.is_connected:
            return
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self.nc.request(
                f"{_JS_API}.CONSUMER.DELETE.{stream}.{consumer}", b"", timeout=_CLEANUP_TIMEOUT_S
            )

    async def api(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one JetStream API request and return its JSON response.

        Raises:
            _ApiError: the server answered with an error.
            UnavailableError: the server did not answer in time.
        """
        with _nats_errors(subject):
            msg = await self.nc.request(
                f"{_JS_API}.{subject}", json.dumps(body).encode(), timeout=self.timeout
            )
        response: dict[str, Any] = json.loads(msg.data)
        error = response.get("error")
        if error:
            raise _ApiError(
                int(error.get("code", 0)),
                int(error.get("err_code", 0)),
                error.get("description", ""),
            )
        return response

    async def get_message(self, stream: str, query: dict[str, Any]) -> dict[str, Any] | None:
        """Return a stored message from the stream leader, or None if there is none."""
        try:
            response = await self.api(f"STREAM.MSG.GET.{stream}", query)
        except _ApiError as exc:
            if exc.err_code in (_ERR_NO_MESSAGE, _ERR_STREAM_NOT_FOUND):
                return None
            raise
        message: dict[str, Any] = response["message"]
        return message

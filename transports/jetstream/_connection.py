"""The NATS connection every concern shares, and nats-py errors as transport errors.

Invariants:

- The initial connect must succeed within ``connect_timeout_s`` (else
  `UnavailableError`, saying whether JetStream is disabled or no server completed the
  NATS handshake); afterwards nats-py reconnects to the same URLs forever (every
  0.25 s) for as long as the connection is not closed, however long the servers are
  gone.
- **Nothing is sent on a later connection than the one it was made on.** A call made
  while disconnected waits for the reconnect (`_Connection.ready`), at most the request
  timeout, then fails with `UnavailableError` saying how long the connection has been
  down and where it is reconnecting; it sent nothing. nats-py would otherwise queue
  publishes made while disconnected (``pending_size``, 2 MiB by default) and write them
  to the server after the reconnect, long after the caller gave up: an append or a
  compare-and-set reported as failed would land later. So the connection has no such
  queue (``pending_size=0``: a publish while disconnected raises at once), and what
  nats-py had queued but not yet written when the connection broke is dropped
  (`_Connection._drop_unsent`; subscriptions are replayed by nats-py from its own
  table). A call that was sent before the connection broke may have been applied: its
  caller sees `UnavailableError` and retries (an append with the same ``msg_id``).
- After a reconnect the server may have lost or replaced streams and consumers: every
  cache registered with `_Connection.on_reconnected` is dropped, then every open
  subscription is told to replace its consumer.
- Every nats-py call runs inside `_nats_errors` (`_errors`), so callers see only
  transport errors.
- Cleanup (deleting a consumer) is best effort and never raises: the server drops
  inactive consumers anyway.
- **A refused credential ends the connection, never a silent retry loop.** A connection
  presenting a token (`transports.jetstream._session`) that the server refuses at the
  first connect fails at once with `TokenRejectedError`. Refused on a reconnect (the
  token expired or its key was revoked, and the server closed the connection), it keeps
  trying for `AUTH_GRACE_S` (the auth service may be restarting with the server), then
  closes for good: every later call raises `TokenRejectedError`. A token known to have
  expired closes it at the first refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as _NatsClient

from transports.base import (
    TokenRejectedError,
    UnavailableError,
)
from transports.jetstream._errors import (
    _CONNECT_FAILURES,
    _ERR_NO_MESSAGE,
    _ERR_STREAM_NOT_FOUND,
    _ApiError,
    _nats_errors,
)
from transports.jetstream._names import _JS_API, HEADER_RESERVE


class _Resumable(Protocol):
    """What the connection needs of a subscription it tracks (`_subscription`)."""

    def request_reset(self, reason: str) -> None:
        """Re-create the consumer from the last delivered sequence."""

    async def aclose(self) -> None:
        """Stop the subscription."""


_logger = logging.getLogger("transports.jetstream")

#: How long a reconnect may be refused before the connection closes for good (seconds).
AUTH_GRACE_S: Final = 15.0
#: What nats-server says (lower case) when it refuses or ends a client's credential.
_REFUSALS: Final = ("authorization violation", "authentication expired", "authentication revoked")

_CLEANUP_TIMEOUT_S: Final = 1.0
_RECONNECT_WAIT_S: Final = 0.25


def _where(url: str) -> str:
    """Return ``host:port`` of a NATS URL, without the credentials it may carry."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        return f"{parts.hostname}:{parts.port or 4222}"
    except ValueError:
        return "?"


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
        self._servers: list[str] = []
        # Set while connected (from the callbacks); `ready` waits on it.
        self._up = asyncio.Event()
        self._down_since: float | None = None
        self.dropped_unsent = 0
        # Credential refusals (module docstring): why the connection ended, if it did.
        self.rejected: str | None = None
        self.expires_at_s: float | None = None
        self._refused = asyncio.Event()
        self._refused_since: float | None = None
        self._ever_connected = False

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
        self._servers = [_where(url) for url in servers]
        try:
            async with asyncio.timeout(connect_timeout_s):
                await self._until_refused(
                    nc.connect(
                        servers=servers,
                        connect_timeout=max(0.5, connect_timeout_s / len(servers)),
                        allow_reconnect=True,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=_RECONNECT_WAIT_S,
                        # No queue of publishes made while disconnected (module docstring).
                        pending_size=0,
                        ping_interval=10,
                        max_outstanding_pings=3,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                        closed_cb=self._on_closed,
                        **options,
                    )
                )
                self.js = nc.jetstream(timeout=self.timeout)
                await self.js.account_info()
            self._ever_connected = True
            self._up.set()
        except TokenRejectedError:
            await self._close_nc()
            raise
        except _CONNECT_FAILURES as exc:
            last = nc.last_error
            await self._close_nc()
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

    async def _until_refused(self, work: Any) -> None:
        """Run ``work`` (the connect); raise `TokenRejectedError` if the server refuses first."""
        task = asyncio.ensure_future(work)
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise TokenRejectedError(
                "the server refused this credential (unknown, revoked or expired key, "
                "expired or forged token)"
            )
        task.result()

    async def _on_error(self, exc: Exception) -> None:
        _logger.debug("nats: %r", exc)
        text = str(exc).lower()
        if any(refusal in text for refusal in _REFUSALS):
            self._on_refused(text)

    def _on_refused(self, text: str) -> None:
        """The server refused the credential: fail now, or after the grace (docstring)."""
        if not self._ever_connected:
            self._refused.set()
            return
        # nats-py opens a new socket for the next attempt without closing this refused
        # one (its reconnect loop, nats-py 2.16): close it here, or each refusal leaks one.
        transport = getattr(self.nc, "_transport", None)
        if transport is not None:
            transport.close()
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        expired = self.expires_at_s is not None and time.time() >= self.expires_at_s
        if expired or now - self._refused_since >= AUTH_GRACE_S or "expired" in text:
            if expired or "expired" in text:
                why = "the token expired"
            else:
                why = f"the server refused this token for {AUTH_GRACE_S:.0f}s (revoked key?)"
            self.reject(why)

    def reject(self, why: str) -> None:
        """Close the connection for good: every later call raises `TokenRejectedError`."""
        if self.rejected is not None:
            return
        self.rejected = (
            f"{why}; the connection is closed (a call in flight when it closed may have "
            "been applied)"
        )
        _logger.warning("NATS connection closed for good: %s", why)
        self._up.set()  # wake callers waiting in `ready`: they raise now
        asyncio.get_running_loop().create_task(self._close_rejected())

    async def _close_rejected(self) -> None:
        await self._close_nc()

    async def _close_nc(self) -> None:
        """Close the nats-py client, bounded: after a cancelled connect it can wait forever."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), _CLEANUP_TIMEOUT_S * 2)

    async def _on_disconnected(self) -> None:
        self._up.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._drop_unsent()
        if not self.closed:
            _logger.warning(
                "disconnected from NATS; reconnecting to %s every %ss",
                ", ".join(self._servers),
                _RECONNECT_WAIT_S,
            )

    def _drop_unsent(self) -> None:
        """Forget what nats-py queued on the broken connection but never wrote.

        nats-py writes that queue to the next server after a reconnect (its
        ``_pending``; checked by tests/transports/test_jetstream.py), so a request
        whose caller already gave up would reach the server later. Subscriptions are
        replayed from nats-py's own table and pings are reset on reconnect, so only
        requests and publishes are lost here, which is the point (module docstring).
        """
        pending = getattr(self.nc, "_pending", None)
        if isinstance(pending, list) and pending:
            self.dropped_unsent += len(pending)
            _logger.info("dropping %d NATS commands never sent before the disconnect", len(pending))
            pending.clear()
            self.nc._pending_data_size = 0

    async def _on_reconnected(self) -> None:
        url = self.nc.connected_url
        down = None if self._down_since is None else time.monotonic() - self._down_since
        self._down_since = None
        self._refused_since = None
        self._up.set()
        _logger.warning(
            "reconnected to NATS at %s after %s",
            f"{url.hostname}:{url.port}" if url is not None else "?",  # no credentials
            "?" if down is None else f"{down:.1f}s",
        )
        # The server may have lost or replaced streams and consumers: check again.
        for hook in self._reconnect_hooks:
            hook()
        for subscription in list(self.subscriptions):
            subscription.request_reset("reconnected")

    async def _on_closed(self) -> None:
        if not self.closed:
            _logger.error(
                "the NATS connection to %s was closed and will not reconnect (last error: %r)",
                ", ".join(self._servers),
                self.nc.last_error,
            )

    def down_for_s(self) -> float | None:
        """Seconds since the connection went down, or None while it is up."""
        return None if self._down_since is None else time.monotonic() - self._down_since

    async def ready(self, what: str) -> None:
        """Return once connected, waiting for a reconnect at most the request timeout.

        Raises:
            UnavailableError: not connected within the request timeout (nothing was
                sent), or the connection was closed for good.
        """
        nc = self.nc
        if self.rejected is not None:
            raise TokenRejectedError(f"{what}: {self.rejected}")
        if nc.is_connected:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while not nc.is_connected:
            if self.rejected is not None:
                raise TokenRejectedError(f"{what}: {self.rejected}")
            if self.closed or nc.is_closed:
                raise UnavailableError(
                    f"{what}: the connection to NATS is closed (last error: {nc.last_error!r})"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                down = self.down_for_s()
                since = "" if down is None else f" for {down:.1f}s"
                raise UnavailableError(
                    f"{what}: not connected to NATS{since}, so this call sent nothing; "
                    f"reconnecting to {', '.join(self._servers)} every {_RECONNECT_WAIT_S}s "
                    f"for as long as this client runs (last error: {nc.last_error!r})"
                )
            if self._up.is_set():
                # nats-py changed state before its callback ran: look again shortly.
                await asyncio.sleep(min(remaining, 0.01))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._up.wait(), remaining)

    async def aclose(self) -> None:
        """End every subscription and close the connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        subscriptions = list(self.subscriptions)
        if subscriptions:
            await asyncio.gather(*(s.aclose() for s in subscriptions))
        await self._close_nc()

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

"""Ordered push consumers: a subject's messages in stream order, with no gaps or repeats.

Implemented here rather than with nats-py's ``ordered_consumer``, which records a
message as delivered before a slow-consumer drop and can then skip it silently.

Invariants:

- A subscription is an ephemeral, memory-stored R1 consumer with flow control and idle
  heartbeats (every 1 s), filtered on one subject, starting at ``after_seq + 1``.
- Every data message must carry the next consumer sequence; a gap, a heartbeat
  reporting a later consumer sequence, no activity for 3.5 s, a status other than
  100, or a reconnect replace the consumer with a new one starting after the last
  delivered stream sequence, so deliveries have no gaps and no repeats across server
  restarts. A stream sequence at or below the last delivered one is never delivered.
- Each `Delivery` names the previous delivered stream sequence (``prev_seq``); the
  first one's is ``after_seq``.
- Messages of a replaced consumer are ignored (each consumer has a generation).
- Deliveries are queued without bound; flow control is answered as soon as a message
  is queued. Closing ends the iteration promptly and deletes the consumer (best
  effort).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
from nats.js import api

from transports.base import Delivery, TransportError
from transports.jetstream._connection import _Connection
from transports.jetstream._errors import _nats_errors

_logger = logging.getLogger("transports.jetstream")

_HEARTBEAT_S: Final = 1.0
_STALE_AFTER_S: Final = 3.5
_CONSUMER_INACTIVE_S: Final = 60.0

_CLOSED: Final = object()


@dataclass(frozen=True, slots=True)
class _AckInfo:
    """What a JetStream message's reply subject says about it."""

    stream_seq: int
    consumer_seq: int
    time_ns: int
    pending: int


def _ack_info(reply: str | None) -> _AckInfo | None:
    """Parse ``$JS.ACK.[<domain>.<hash>.]<stream>.<consumer>.<n>.<sseq>.<cseq>.<ts>.<pending>``."""
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    if len(tokens) == 9:
        base = 2
    elif len(tokens) >= 11:
        base = 4
    else:
        return None
    try:
        return _AckInfo(
            stream_seq=int(tokens[base + 3]),
            consumer_seq=int(tokens[base + 4]),
            time_ns=int(tokens[base + 5]),
            pending=int(tokens[base + 6]),
        )
    except ValueError:
        return None


class JetStreamSubscription:
    """An ordered subscription to one subject of a stream (see the module docstring).

    Iterate it with ``async for``; `aclose` ends the iteration promptly. Deliveries
    are queued without bound (like the memory transport): flow control is answered as
    soon as a message is queued.
    """

    def __init__(self, owner: _Connection, stream: str, subject: str, after_seq: int) -> None:
        self._owner = owner
        self._stream = stream
        self._subject = subject
        self._last_seq = after_seq
        self._queue: asyncio.Queue[Delivery | object] = asyncio.Queue()
        self._closed = False
        self._healthy = False
        self._generation = 0
        self._consumer_seq = 0
        self._inbox: Any = None
        self._consumer: str | None = None
        self._last_activity = time.monotonic()
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if self._closed or not isinstance(item, Delivery):
            raise StopAsyncIteration
        return item

    # -- lifecycle ------------------------------------------------------------

    async def aclose(self) -> None:
        """End the subscription and delete its consumer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        self._queue.put_nowait(_CLOSED)
        self._owner.subscriptions.discard(self)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        await self._drop()

    async def start(self) -> None:
        """Create the first consumer and the task that keeps one alive."""
        self._healthy = await self._create_consumer()
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"mesa-subscription-{self._subject}"
        )

    def request_reset(self, reason: str) -> None:
        """Abandon the current consumer; the supervisor replaces it."""
        if self._closed:
            return
        _logger.debug("resetting the consumer of %s: %s", self._subject, reason)
        self._generation += 1
        self._healthy = False
        self._wake.set()

    async def _supervise(self) -> None:
        nc = self._owner.nc
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _HEARTBEAT_S)
            self._wake.clear()
            if self._closed:
                return
            if self._healthy and time.monotonic() - self._last_activity > _STALE_AFTER_S:
                _logger.debug("no heartbeat from the consumer of %s: replacing it", self._subject)
                self._healthy = False
            if self._healthy or not nc.is_connected:
                continue
            await self._drop()
            try:
                self._healthy = await self._create_consumer()
            except TransportError as exc:
                _logger.info("cannot resume the subscription to %s yet: %s", self._subject, exc)
            except Exception:  # keep the subscription alive whatever went wrong; retry later
                _logger.exception("cannot resume the subscription to %s", self._subject)

    async def _create_consumer(self) -> bool:
        """Create a consumer from the last delivered sequence on; False if reset meanwhile."""
        nc = self._owner.nc
        self._generation += 1
        generation = self._generation
        self._consumer_seq = 0

        async def on_message(msg: Any) -> None:
            if generation == self._generation and not self._closed:
                await self._on_message(msg)

        config = api.ConsumerConfig(
            description="mesafs ordered subscription",
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._last_seq + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self._subject,
            flow_control=True,
            idle_heartbeat=_HEARTBEAT_S,
            inactive_threshold=_CONSUMER_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        with _nats_errors(f"subscribe to {self._subject}"):
            config.deliver_subject = nc.new_inbox()
            self._inbox = await nc.subscribe(
                config.deliver_subject, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0
            )
            info = await self._owner.js.add_consumer(self._stream, config=config)
        self._consumer = info.name
        self._last_activity = time.monotonic()
        return generation == self._generation

    async def _drop(self) -> None:
        """Unsubscribe the current inbox and delete the current consumer (best effort)."""
        inbox, consumer = self._inbox, self._consumer
        self._inbox = self._consumer = None
        if inbox is not None:
            with contextlib.suppress(nats.errors.Error):
                await inbox.unsubscribe()
        if consumer is not None:
            await self._owner.delete_consumer(self._stream, consumer)

    async def _on_message(self, msg: Any) -> None:
        self._last_activity = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is not None and not msg.data:
            await self._on_status(msg, status, headers)
            return
        ack = _ack_info(msg.reply)
        if ack is None:
            return
        if ack.consumer_seq != self._consumer_seq + 1:
            self.request_reset(f"consumer sequence {ack.consumer_seq} after {self._consumer_seq}")
            return
        self._consumer_seq = ack.consumer_seq
        if ack.stream_seq <= self._last_seq:
            return
        self._queue.put_nowait(
            Delivery(
                seq=ack.stream_seq,
                prev_seq=self._last_seq,
                time_ms=ack.time_ns // 1_000_000,
                payload=msg.data,
            )
        )
        self._last_seq = ack.stream_seq

    async def _on_status(self, msg: Any, status: str, headers: dict[str, str]) -> None:
        if status != "100":
            self.request_reset(f"status {status} {headers.get('Description', '')}")
            return
        nc = self._owner.nc
        for reply in (msg.reply, headers.get("Nats-Consumer-Stalled")):
            if reply:
                with contextlib.suppress(nats.errors.Error):
                    await nc.publish(reply, b"")
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) != self._consumer_seq:
            self.request_reset(f"heartbeat reports consumer sequence {last}")


async def _open_subscription(
    conn: _Connection, stream: str, subject: str, after_seq: int
) -> JetStreamSubscription:
    """Return a started subscription to ``subject`` of ``stream`` after ``after_seq``.

    The subscription is registered with ``conn`` (so a reconnect resets it and closing
    the connection ends it); one that fails to start is closed before the error
    propagates.
    """
    subscription = JetStreamSubscription(conn, stream, subject, after_seq)
    conn.subscriptions.add(subscription)
    try:
        await subscription.start()
    except BaseException:
        await subscription.aclose()
        raise
    return subscription

"""Logs: one stream per repo, one subject per change; append, last sequence, subscribe.

Invariants:

- The log stream of a repo (`stream_name`) is provisioned with the rest of the repo's
  storage (`transports.jetstream._provision`) on the first append or subscribe of each
  connection (again after a reconnect): file storage, ``num_replicas`` = ``replicas``,
  ``duplicate_window`` 2 min, ``deny_delete`` and (for new streams) ``deny_purge``:
  entries are never removed, ``allow_direct``. A stream found with another storage
  type is an error.
- Append = ``js.publish`` with a ``Nats-Msg-Id`` header. A duplicate ack (same
  ``msg_id`` within the window, on any change of the repo) returns the original
  sequence. The window counts from the original's store time and survives a server
  restart (JetStream rebuilds it from the file store when the stream recovers). The
  PubAck carries no time, so `Appended.time_ms` is None: the entry's delivery carries
  the server's time. An append no stream takes (the stream vanished, or the server
  was replaced) recreates the stream and is retried once.
- Nothing larger than the server's ``max_payload`` minus `HEADER_RESERVE` is ever sent:
  NATS counts headers in ``max_payload`` and closes the connection of a client that
  exceeds it.
- ``last_seq`` asks the stream leader (``STREAM.MSG.GET``), never a lagging follower.
- Subscriptions are the ordered push consumers of `transports.jetstream._subscription`.
"""

from __future__ import annotations

import logging
from typing import Any

import nats.js.errors

from transports.base import (
    Appended,
    LogId,
    PayloadTooLargeError,
    TransportError,
    UnavailableError,
)
from transports.jetstream._connection import _Connection
from transports.jetstream._errors import _nats_errors
from transports.jetstream._names import _check_msg_id, log_subject, stream_name
from transports.jetstream._provision import DUPLICATE_WINDOW_S, _Provision
from transports.jetstream._subscription import JetStreamSubscription, _open_subscription

_logger = logging.getLogger("transports.jetstream")

__all__ = ["DUPLICATE_WINDOW_S", "_Log"]


class _Log:
    """The logs of every repo over one connection (names and tokens checked by the caller).

    Args:
        conn: the shared connection.
        provision: creates a repo's storage before its first use.
    """

    def __init__(self, conn: _Connection, provision: _Provision) -> None:
        self._conn = conn
        self._provision = provision

    async def append(
        self, log: LogId, payload: bytes, msg_id: str, *, max_payload_bytes: int
    ) -> Appended:
        """Append ``payload`` to ``log``; deduplicated by ``msg_id``.

        Raises:
            PayloadTooLargeError: ``payload`` exceeds ``max_payload_bytes`` or the
                server's limit.
            ValueError: ``msg_id`` is empty, too long or has a line break.
            UnavailableError: the server did not answer in time.
        """
        limit = min(max_payload_bytes, self._conn.payload_limit())
        if len(payload) > limit:
            raise PayloadTooLargeError(
                f"entry of {len(payload)} bytes exceeds the maximum of {limit}"
            )
        _check_msg_id(msg_id)
        stream = await self._ensure_stream(log.org, log.repo)
        subject = log_subject(log)
        ack = await self._publish_entry(subject, bytes(payload), msg_id)
        if ack is None:
            # The stream vanished (or the server was replaced): create it and retry.
            self._provision.forget(log.org, log.repo)
            await self._ensure_stream(log.org, log.repo)
            ack = await self._publish_entry(subject, bytes(payload), msg_id)
            if ack is None:
                raise UnavailableError(f"no stream stores {subject}")
        if ack.stream != stream:
            raise TransportError(f"{subject} was stored by stream {ack.stream}, not {stream}")
        # The PubAck carries no timestamp and reading it back costs a second round
        # trip per append; the entry's delivery carries the server's time.
        return Appended(seq=ack.seq, time_ms=None)

    async def _publish_entry(self, subject: str, payload: bytes, msg_id: str) -> Any:
        """Publish one entry and return its PubAck, or None when no stream takes it."""
        with _nats_errors(f"append to {subject}"):
            try:
                return await self._conn.js.publish(
                    subject, payload, headers={"Nats-Msg-Id": msg_id}
                )
            except nats.js.errors.NoStreamResponseError:
                return None

    async def last_seq(self, log: LogId) -> int:
        """Return the sequence of the newest entry of ``log`` (0 when empty)."""
        message = await self._conn.get_message(
            stream_name(log.org, log.repo), {"last_by_subj": log_subject(log)}
        )
        return 0 if message is None else int(message["seq"])

    async def subscribe(self, log: LogId, after_seq: int) -> JetStreamSubscription:
        """Return an ordered subscription to ``log`` starting after ``after_seq``.

        Raises:
            ValueError: ``after_seq`` is negative.
            UnavailableError: the server did not answer in time.
        """
        if after_seq < 0:
            raise ValueError(f"after_seq must not be negative, got {after_seq}")
        stream = await self._ensure_stream(log.org, log.repo)
        return await _open_subscription(self._conn, stream, log_subject(log), after_seq)

    async def _ensure_stream(self, org: str, repo: str) -> str:
        """Make sure the storage of ``org/repo`` exists (`_provision`); return the stream."""
        await self._provision.ensure(org, repo)
        return stream_name(org, repo)

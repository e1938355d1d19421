"""Provisioning: the streams and buckets of a repo, created together, deleted together.

Invariants:

- A repo's storage is its log stream (`stream_name`), its KV bucket (`kv_bucket`), its
  blob Object Store (`blob_bucket`) and its entry in the org's repo index
  (`index_bucket`). `create_repo_storage` makes all four (or brings the log stream's
  config up to date) and is idempotent; `delete_repo_storage` removes all four and is
  idempotent too.
- Only a trusted connection provisions directly (the service's, or a transport given
  NATS credentials). A transport whose connections present tokens asks the service
  (`transports.jetstream.service`), which checks the token: a client never chooses a
  stream's config, so it cannot point a stream at another repo's subjects or source
  another repo's data.
- `_Provision.ensure` remembers what it provisioned until the next reconnect (the
  server may have lost or replaced streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import nats.js.errors
from nats.js import api

from transports.base import TransportError
from transports.jetstream._connection import _Connection
from transports.jetstream._errors import (
    _ERR_STREAM_NAME_IN_USE,
    _ERR_STREAM_NOT_FOUND,
    _ApiError,
    _nats_errors,
)
from transports.jetstream._names import (
    KEYS_BUCKET,
    _blob_stream,
    _log_subjects,
    blob_bucket,
    index_bucket,
    kv_bucket,
    kv_stream,
    kv_subject,
    stream_name,
)

_logger = logging.getLogger("transports.jetstream")

#: How long JetStream remembers a ``Nats-Msg-Id`` (seconds).
DUPLICATE_WINDOW_S: Final = 120.0
#: How many revisions a KV bucket keeps per key.
KV_HISTORY: Final = 5

#: Asks the service to provision ``(org, repo)`` (a transport presenting tokens).
Remote = Callable[[str, str], Awaitable[None]]


class _Provision:
    """Makes sure a repo's storage exists before a write needs it (module docstring).

    Args:
        conn: the connection.
        remote: None to provision directly (a trusted connection), else how to ask the
            service.
    """

    def __init__(self, conn: _Connection, remote: Remote | None = None) -> None:
        self._conn = conn
        self._remote = remote
        self._ready: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._keys_ready = False
        conn.on_reconnected(self._forget)

    def _forget(self) -> None:
        self._ready.clear()
        self._keys_ready = False

    def forget(self, org: str, repo: str) -> None:
        """Check ``org/repo`` again on its next use (its stream vanished)."""
        self._ready.discard((org, repo))

    async def ensure(self, org: str, repo: str) -> None:
        """Create the storage of ``org/repo`` unless this connection already did."""
        key = (org, repo)
        if key in self._ready:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key in self._ready:
                return
            if self._remote is not None:
                await self._remote(org, repo)
            else:
                await create_repo_storage(self._conn, org, repo)
            self._ready.add(key)

    async def ensure_keys_bucket(self) -> None:
        """Create the key records' bucket (trusted connections only)."""
        if self._keys_ready:
            return
        await _ensure_kv_bucket(self._conn, KEYS_BUCKET, "mesafs API key records")
        self._keys_ready = True


async def create_repo_storage(conn: _Connection, org: str, repo: str) -> None:
    """Create (or update) every stream and bucket of ``org/repo``; idempotent.

    The log stream is created last, so a repo whose log stream exists has the rest
    too: checking an existing repo (every connection does after a reconnect) costs one
    stream-info request, as a lone log stream did.

    Raises:
        UnavailableError: the server did not answer in time.
        TransportError: a stream exists with a config this cannot take over.
    """
    name = stream_name(org, repo)
    with _nats_errors(f"look up stream {name}"):
        try:
            info: Any = await conn.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            info = None
    if info is not None:
        await _ensure_log_stream(conn, org, repo, info)
        return
    await _ensure_kv_bucket(conn, kv_bucket(org, repo), f"mesafs records of {org}/{repo}")
    bucket = blob_bucket(org, repo)
    with _nats_errors(f"open blob bucket {bucket}"):
        try:
            await conn.js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError:
            config = api.ObjectStoreConfig(
                description=f"mesafs blobs of {org}/{repo} (zstd, named by sha256)",
                storage=api.StorageType.FILE,
                replicas=conn.replicas,
            )
            try:
                await conn.js.create_object_store(bucket, config=config)
            except nats.js.errors.APIError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise
    index = index_bucket(org)
    await _ensure_kv_bucket(conn, index, f"mesafs repos of {org}")
    with _nats_errors(f"index {org}/{repo}"):
        await conn.js.publish(kv_subject(index, repo), b"1")
    await _ensure_log_stream(conn, org, repo, None)


async def delete_repo_storage(conn: _Connection, org: str, repo: str) -> None:
    """Delete every stream and bucket of ``org/repo`` and its index entry; idempotent.

    Raises:
        UnavailableError: the server did not answer in time.
    """
    index = index_bucket(org)
    for stream in (
        stream_name(org, repo),
        kv_stream(kv_bucket(org, repo)),
        _blob_stream(blob_bucket(org, repo)),
    ):
        try:
            await conn.api(f"STREAM.DELETE.{stream}", {})
        except _ApiError as exc:
            if exc.err_code != _ERR_STREAM_NOT_FOUND:
                raise
    # No index stream means nothing to remove.
    with (
        _nats_errors(f"unindex {org}/{repo}"),
        contextlib.suppress(nats.js.errors.NoStreamResponseError),
    ):
        await conn.js.publish(
            kv_subject(index, repo),
            b"",
            headers={"KV-Operation": "PURGE", "Nats-Rollup": "sub"},
        )


async def _ensure_kv_bucket(conn: _Connection, bucket: str, description: str) -> None:
    """Create the KV bucket ``bucket`` unless it exists."""
    with _nats_errors(f"open KV bucket {bucket}"):
        try:
            await conn.js.stream_info(kv_stream(bucket))
        except nats.js.errors.NotFoundError:
            config = api.KeyValueConfig(
                bucket=bucket,
                description=description,
                history=KV_HISTORY,
                storage=api.StorageType.FILE,
                replicas=conn.replicas,
            )
            try:
                await conn.js.create_key_value(config=config)
            except nats.js.errors.APIError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise


async def _ensure_log_stream(conn: _Connection, org: str, repo: str, info: Any) -> None:
    """Create the log stream of ``org/repo`` (``info`` None), or bring it to the wanted config."""
    name = stream_name(org, repo)
    subjects = [_log_subjects(org, repo)]
    with _nats_errors(f"create stream {name}"):
        if info is None:
            config = api.StreamConfig(
                name=name,
                description=f"mesafs log of {org}/{repo}",
                subjects=subjects,
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=conn.replicas,
                duplicate_window=DUPLICATE_WINDOW_S,
                allow_direct=True,
                deny_delete=True,
                deny_purge=True,
            )
            try:
                await conn.js.add_stream(config=config)
                return
            except nats.js.errors.APIError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise
            info = await conn.js.stream_info(name)
        config = info.config
        if config.storage not in (api.StorageType.FILE, "file"):
            raise TransportError(f"stream {name} exists with {config.storage} storage, not file")
        wanted = {
            "subjects": subjects,
            "num_replicas": conn.replicas,
            "duplicate_window": DUPLICATE_WINDOW_S,
            "allow_direct": True,
            "deny_delete": True,
        }
        if any(getattr(config, field) != value for field, value in wanted.items()):
            _logger.info("updating stream %s to %s", name, wanted)
            for field, value in wanted.items():
                setattr(config, field, value)
            await conn.js.update_stream(config=config)

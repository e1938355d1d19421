"""Blobs: one Object Store bucket per repo, objects named by the sha256 of their bytes.

Invariants:

- The bucket of a repo is `blob_bucket` (``mesa_<org>_<repo'>_blobs``), file storage,
  ``replicas`` replicas, created by the first put (a get never creates it).
- The object name is the sha256 hex digest of the raw bytes; the object holds the
  bytes zstd-compressed (level `ZSTD_LEVEL`) in chunks of at most 128 KiB and at most
  the server's ``max_payload`` minus `HEADER_RESERVE` (nats-py's default chunk size
  may exceed a server's limit).
- Put skips an existing object, so it is idempotent.
- Get reads the chunks with the ordered consumer of
  `transports.jetstream._subscription`, decompresses and checks the digest: corrupt
  bytes raise `TransportError`, never return. A read that times out is retried once
  (a concurrent put of the same digest may have replaced the chunks).
- Hashing and zstd of more than 1 MiB run in a thread (both drop the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, TypeVar

import nats.js.errors
import zstandard
from nats.js import api

from engine.content import digest_of
from transports.base import MissingError, TransportError, UnavailableError
from transports.jetstream._connection import _Connection, _nats_errors
from transports.jetstream._names import (
    _blob_chunks_subject,
    _blob_stream,
    _is_digest,
    blob_bucket,
)
from transports.jetstream._subscription import _open_subscription

#: zstd level of stored blobs.
ZSTD_LEVEL: Final = 3

_OFFLOAD_BYTES: Final = 1 << 20
_CHUNK_BYTES: Final = 128 * 1024

_T = TypeVar("_T")


def _digest_and_compress(data: bytes) -> tuple[str, bytes]:
    """Return the sha256 digest of ``data`` and ``data`` zstd-compressed."""
    return digest_of(data), zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def _decompress_and_verify(compressed: bytes, digest: str) -> bytes:
    """Return the bytes of a stored blob, checked against ``digest``.

    Raises:
        TransportError: the bytes do not decompress, or hash differently.
    """
    try:
        data: bytes = zstandard.ZstdDecompressor().decompress(compressed)
    except zstandard.ZstdError as exc:
        raise TransportError(f"blob {digest} is corrupt: {exc}") from exc
    if digest_of(data) != digest:
        raise TransportError(f"blob {digest} is corrupt: its bytes hash differently")
    return data


async def _offload(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """Run CPU-heavy ``fn`` in a thread when ``size`` is large (zstd and hashlib drop the GIL)."""
    if size > _OFFLOAD_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class _Blobs:
    """The blob buckets of every repo over one connection (names and tokens checked by the caller).

    Args:
        conn: the shared connection.
    """

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._stores: dict[str, Any] = {}
        conn.on_reconnected(self._stores.clear)

    async def put(self, org: str, repo: str, data: bytes) -> str:
        """Store ``data`` once and return its sha256 digest (idempotent).

        Raises:
            UnavailableError: the server did not answer in time.
        """
        raw = bytes(data)
        digest, compressed = await _offload(len(raw), _digest_and_compress, raw)
        store = await self._store(org, repo, create=True)
        assert store is not None
        with _nats_errors(f"store blob {digest}"):
            try:
                await store.get_info(digest)
            except nats.js.errors.ObjectNotFoundError:
                # Chunks must fit the server's max_payload, which may be below
                # nats-py's default chunk size.
                chunk = min(_CHUNK_BYTES, self._conn.payload_limit())
                meta = api.ObjectMeta(
                    name=digest,
                    description="zstd",
                    options=api.ObjectMetaOptions(max_chunk_size=chunk),
                )
                await store.put(digest, compressed, meta=meta)
        return digest

    async def get(self, org: str, repo: str, digest: str) -> bytes:
        """Return the bytes stored under ``digest``.

        Raises:
            MissingError: no blob is stored under ``digest`` in this repo.
            UnavailableError: the server did not answer in time.
            TransportError: the stored bytes are corrupt.
        """
        missing = MissingError(f"no blob {digest!r} in {org}/{repo}")
        if not _is_digest(digest):
            raise missing
        store = await self._store(org, repo, create=False)
        if store is None:
            raise missing
        bucket = blob_bucket(org, repo)
        for attempt in range(2):
            with _nats_errors(f"read blob {digest}"):
                try:
                    info = await store.get_info(digest)
                except nats.js.errors.ObjectNotFoundError:
                    raise missing from None
            try:
                compressed = await self._read_chunks(bucket, info)
            except UnavailableError:
                # A concurrent put of the same digest may have replaced the chunks.
                if attempt:
                    raise
                continue
            return await _offload(len(compressed), _decompress_and_verify, compressed, digest)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_chunks(self, bucket: str, info: Any) -> bytes:
        """Return the compressed bytes of the object ``info`` describes, chunk by chunk."""
        size, chunks = int(info.size or 0), int(info.chunks or 0)
        if size == 0:
            return b""
        subscription = await _open_subscription(
            self._conn, _blob_stream(bucket), _blob_chunks_subject(bucket, info.nuid), 0
        )
        parts: list[bytes] = []
        try:
            entries = aiter(subscription)
            for _ in range(chunks):
                try:
                    delivery = await asyncio.wait_for(anext(entries), self._conn.timeout)
                except (TimeoutError, StopAsyncIteration) as exc:
                    raise UnavailableError(f"blob chunks of {info.name} did not arrive") from exc
                parts.append(delivery.payload)
        finally:
            await subscription.aclose()
        data = b"".join(parts)
        if len(data) != size:
            raise TransportError(f"blob {info.name}: read {len(data)} bytes, expected {size}")
        return data

    async def _store(self, org: str, repo: str, *, create: bool) -> Any:
        """Return the Object Store of ``org/repo``; None if it does not exist and not ``create``."""
        bucket = blob_bucket(org, repo)
        store = self._stores.get(bucket)
        if store is not None:
            return store
        with _nats_errors(f"open blob bucket {bucket}"):
            try:
                store = await self._conn.js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                config = api.ObjectStoreConfig(
                    description=f"mesafs blobs of {org}/{repo} (zstd, named by sha256)",
                    storage=api.StorageType.FILE,
                    replicas=self._conn.replicas,
                )
                store = await self._conn.js.create_object_store(bucket, config=config)
        self._stores[bucket] = store
        return store

"""Blobs: one Object Store bucket per repo, objects named by the sha256 of their bytes.

Invariants:

- The bucket of a repo is `blob_bucket` (``mesa_<org>_<repo'>_blobs``), file storage,
  ``replicas`` replicas, created by the first put (a get never creates it).
- The object name is the sha256 hex digest of the raw bytes. The object holds the raw
  bytes cut in pieces of at most `BLOB_CHUNK_BYTES`, each compressed as its own zstd
  frame (level `ZSTD_LEVEL`), the frames stored back to back in chunks of at most
  128 KiB and at most the server's ``max_payload`` minus `HEADER_RESERVE`. A chunk
  never holds bytes of two frames, so one chunk decompresses to at most
  `BLOB_CHUNK_BYTES` whatever the ratio (a chunk of zeros would otherwise expand
  ~30,000 times). Objects of the earlier format (one frame for the whole blob) read
  the same way, in pieces of at most `BLOB_CHUNK_BYTES` too.
- A put streams: each piece is hashed and compressed as it comes (the next piece while
  the previous one's chunks are sent), its chunks published in order under a fresh
  chunk subject, each acknowledged before the next is sent; the object's meta (named
  by the digest) is published last, only if no object of that name exists by then.
  A put that fails, is refused (more than ``max_bytes``) or finds the object stored
  meanwhile purges its chunks, so it changes nothing. The whole-bytes put hashes
  first and sends nothing for an existing object.
- A get reads the chunks through an ephemeral pull consumer, at most `_BATCH` per
  request, so a reader holds a bounded number of chunks whatever the blob's size; it
  checks the chunk sequence, the stored size and, after the last piece, the digest:
  corrupt bytes raise `TransportError` by the end of the stream, never end it
  quietly. A read that fails before yielding anything is retried once (a concurrent
  put of the earlier format may have replaced the chunks).
- The format (frames, digests) and the CPU work are `transports.jetstream._blobformat`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import OBJ_DIGEST_TEMPLATE, OBJ_META_PRE_TEMPLATE

from transports.base import (
    Buffer,
    ByteChunks,
    MissingError,
    PayloadTooLargeError,
    TransportError,
    UnavailableError,
    blob_pieces,
)
from transports.jetstream._blobformat import (
    _OFFLOAD_BYTES,
    _Decoder,
    _Encoder,
    _offload,
)
from transports.jetstream._connection import _Connection
from transports.jetstream._errors import _nats_errors
from transports.jetstream._names import (
    _blob_chunks_subject,
    _blob_stream,
    _is_digest,
    blob_bucket,
)
from transports.jetstream._provision import _Provision

_CHUNK_BYTES: Final = 128 * 1024
#: Chunks one pull request of a get asks for, at most.
_BATCH: Final = 8
_CONSUMER_INACTIVE_S: Final = 60.0


def _sha256_hex(data: Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta_subject(bucket: str, name: str) -> str:
    """Return the subject of an object's meta (the Object Store layout)."""
    return OBJ_META_PRE_TEMPLATE.format(
        bucket=bucket, obj=base64.urlsafe_b64encode(name.encode()).decode()
    )


class _Upload:
    """The chunks of one put, published in order under a fresh subject, each acknowledged."""

    def __init__(self, conn: _Connection, bucket: str, what: str) -> None:
        self._conn, self._bucket, self._what = conn, bucket, what
        self._nuid = secrets.token_hex(11)
        self._subject = _blob_chunks_subject(bucket, self._nuid)
        self._limit = min(_CHUNK_BYTES, conn.payload_limit())
        self._count = self._stored = 0

    async def send(self, frame: bytes) -> None:
        """Publish ``frame`` in chunks of its own (no chunk holds bytes of two frames)."""
        with _nats_errors(f"store {self._what}"):
            for start in range(0, len(frame), self._limit):
                part = frame[start : start + self._limit]
                self._count += 1  # counted before: a failed publish may have stored it
                await self._conn.js.publish(self._subject, part)
                self._stored += len(part)

    async def seal(self, digest: str, stored_sha256: bytes) -> None:
        """Publish the object's meta: the chunks become the blob ``digest``."""
        info = api.ObjectInfo(
            name=digest,
            bucket=self._bucket,
            nuid=self._nuid,
            size=self._stored,
            chunks=self._count,
            mtime=datetime.now(UTC).isoformat(),
            digest=OBJ_DIGEST_TEMPLATE.format(
                digest=base64.urlsafe_b64encode(stored_sha256).decode()
            ),
            description="zstd frames",
            options=api.ObjectMetaOptions(max_chunk_size=self._limit),
        )
        with _nats_errors(f"store blob {digest}"):
            await self._conn.js.publish(
                _meta_subject(self._bucket, digest),
                json.dumps(info.as_dict()).encode(),
                headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT},
            )

    async def close(self, *, kept: bool) -> None:
        """Purge the chunks unless they became a blob (best effort, never raises)."""
        if not kept and self._count:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
                await asyncio.wait_for(
                    self._conn.js.purge_stream(_blob_stream(self._bucket), subject=self._subject),
                    self._conn.timeout,
                )


class _Blobs:
    """The blob buckets of every repo over one connection (names and tokens checked by the caller).

    Args:
        conn: the shared connection.
    """

    def __init__(self, conn: _Connection, provision: _Provision) -> None:
        self._conn = conn
        self._provision = provision
        self._stores: dict[str, Any] = {}
        conn.on_reconnected(self._stores.clear)

    async def put(self, org: str, repo: str, data: Buffer, *, max_bytes: int) -> str:
        """Store ``data`` once and return its sha256 digest (idempotent).

        Raises:
            PayloadTooLargeError: ``data`` exceeds ``max_bytes``.
            UnavailableError: the server did not answer in time.
        """
        view = memoryview(data).cast("B")
        if len(view) > max_bytes:
            raise PayloadTooLargeError(f"blob of {len(view)} bytes exceeds {max_bytes}")
        digest = await _offload(len(view), _sha256_hex, view)
        store = await self._store(org, repo, create=True)
        if await self._info(store, digest) is not None:
            return digest
        return await self.put_chunks(org, repo, (view,), max_bytes=max_bytes, digest=digest)

    async def put_chunks(
        self, org: str, repo: str, chunks: ByteChunks, *, max_bytes: int, digest: str | None = None
    ) -> str:
        """Store the concatenated ``chunks`` once, streaming; return their sha256 digest.

        ``digest``, when the caller already knows it, spares hashing the raw bytes.

        Raises:
            PayloadTooLargeError: the chunks exceed ``max_bytes`` (taken no further).
            UnavailableError: the server did not answer in time.
            TypeError: a chunk is not bytes-like.
        """
        store = await self._store(org, repo, create=True)
        bucket = blob_bucket(org, repo)
        upload = _Upload(self._conn, bucket, f"a blob of {org}/{repo}")
        encoder = _Encoder(hash_raw=digest is None)
        size = 0
        kept = False
        try:
            frame: bytes | None = None
            async for piece in blob_pieces(chunks):
                size += len(piece)
                if size > max_bytes:
                    raise PayloadTooLargeError(f"blob of more than {max_bytes} bytes")
                # Compress this piece while the previous frame is sent; the piece is
                # compressed before the next one is asked for (its buffer may be reused).
                work = asyncio.ensure_future(_offload(len(piece), encoder.encode, piece))
                try:
                    if frame is not None:
                        await upload.send(frame)
                finally:
                    frame = await work
            if frame is not None:
                await upload.send(frame)
            digest = digest if digest is not None else encoder.digest()
            if await self._info(store, digest) is not None:
                return digest  # stored meanwhile: these chunks are purged below
            await upload.seal(digest, encoder.stored.digest())
            kept = True
            return digest
        finally:
            await upload.close(kept=kept)

    async def get(self, org: str, repo: str, digest: str) -> bytes:
        """Return the bytes stored under ``digest``.

        Raises:
            MissingError: no blob is stored under ``digest`` in this repo.
            UnavailableError: the server did not answer in time.
            TransportError: the stored bytes are corrupt.
        """
        async with contextlib.aclosing(await self.get_chunks(org, repo, digest)) as stream:
            return b"".join([piece async for piece in stream])

    async def get_chunks(self, org: str, repo: str, digest: str) -> AsyncGenerator[bytes, None]:
        """Return a stream of the bytes stored under ``digest`` (see the module docstring).

        Raises:
            MissingError: (here) no blob is stored under ``digest`` in this repo.
            UnavailableError: the server did not answer in time.
            TransportError: (while iterating) the stored bytes are corrupt.
        """
        missing = MissingError(f"no blob {digest!r} in {org}/{repo}")
        if not _is_digest(digest):
            raise missing
        store = await self._store(org, repo, create=False)
        info = None if store is None else await self._info(store, digest)
        if info is None:
            raise missing
        return self._stream(store, blob_bucket(org, repo), info, digest, missing)

    async def _stream(
        self, store: Any, bucket: str, info: Any, digest: str, missing: MissingError
    ) -> AsyncGenerator[bytes, None]:
        for attempt in range(2):
            decoder = _Decoder(digest)
            started = False
            try:
                async with contextlib.aclosing(self._read(bucket, info, decoder)) as pieces:
                    async for piece in pieces:
                        started = True
                        yield piece
                decoder.finish()
                return
            except UnavailableError:
                if started or attempt:
                    raise
            info = await self._info(store, digest)
            if info is None:
                raise missing

    async def _read(self, bucket: str, info: Any, decoder: _Decoder) -> AsyncGenerator[bytes, None]:
        """Yield the raw pieces of the object ``info`` describes, `_BATCH` chunks at a time."""
        size, chunks = int(info.size or 0), int(info.chunks or 0)
        if chunks == 0:
            if size:
                raise TransportError(f"blob {info.name}: {size} bytes in no chunks")
            return
        stream = _blob_stream(bucket)
        config = api.ConsumerConfig(
            description="mesafs blob read",
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=_blob_chunks_subject(bucket, info.nuid),
            inactive_threshold=_CONSUMER_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        js = self._conn.js
        with _nats_errors(f"read blob {info.name}"):
            consumer = (await js.add_consumer(stream, config=config)).name
        try:
            with _nats_errors(f"read blob {info.name}"):
                pull = await js.pull_subscribe_bind(consumer=consumer, stream=stream)
            try:
                received = stored = 0
                while received < chunks:
                    with _nats_errors(f"read the chunks of blob {info.name}"):
                        msgs = await pull.fetch(
                            min(_BATCH, chunks - received), timeout=self._conn.timeout
                        )
                    payloads: list[bytes] = []
                    for msg in msgs:
                        received += 1
                        if msg.metadata.sequence.consumer != received:
                            raise UnavailableError(f"blob {info.name}: a chunk went missing")
                        payloads.append(msg.data)
                        stored += len(msg.data)
                    if chunks == 1:
                        raws = decoder.feed(payloads)
                    else:
                        raws = await _offload(_OFFLOAD_BYTES + 1, decoder.feed, payloads)
                    for raw in raws:
                        yield raw
                if stored != size:
                    raise TransportError(f"blob {info.name}: read {stored} bytes, expected {size}")
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await pull.unsubscribe()
        finally:
            await self._conn.delete_consumer(stream, consumer)

    async def _info(self, store: Any, digest: str) -> Any:
        """Return the meta of the object ``digest`` in ``store``, or None."""
        with _nats_errors(f"read blob {digest}"):
            try:
                return await store.get_info(digest)
            except nats.js.errors.ObjectNotFoundError:
                return None

    async def _store(self, org: str, repo: str, *, create: bool) -> Any:
        """Return the Object Store of ``org/repo``; None if it does not exist and not ``create``."""
        bucket = blob_bucket(org, repo)
        store = self._stores.get(bucket)
        if store is not None:
            return store
        if create:
            await self._provision.ensure(org, repo)
        with _nats_errors(f"open blob bucket {bucket}"):
            try:
                store = await self._conn.js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                self._provision.forget(org, repo)
                raise TransportError(f"blob bucket {bucket} vanished after provisioning") from None
        self._stores[bucket] = store
        return store

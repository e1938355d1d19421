"""Reading file values: inline bytes, blobs (cached), and materialized conflicts.

Blobs are immutable and content addressed, so caching them can never serve stale
bytes: an in-memory LRU bounded in bytes (`MEMORY_CACHE_BYTES` in all, no blob over
`MEMORY_CACHE_ITEM_BYTES`), and optionally a disk cache (files named by digest under
``DiskCacheConfig.path``, written as a blob streams in and renamed into place once it
is whole, evicted oldest-first beyond ``max_size_bytes``). A disk file whose bytes do
not hash to its digest is dropped and fetched again; a fetched blob of another size
than its reference is refused (`ValueError`), and the transport checks the digest.

Nothing here holds a whole blob twice: puts stream the caller's buffer (or chunks) to
the transport in pieces; `BlobCache.get` and `content_bytes` fill one growing buffer
from the transport's pieces and return it without a final copy (about 1x the value's
size plus a bounded piece); `chunks`, `content_chunks` and `value_chunks` stream
without holding the value at all (close them, e.g. with ``contextlib.aclosing``, when
stopping early).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import secrets
import shutil
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from engine import conflicts
from engine.content import BlobRef, Content, Inline, digest_of
from engine.merge import Merge
from mesa._gateway import Gateway
from mesa._types import DiskCacheConfig
from transports.base import BLOB_CHUNK_BYTES, Buffer, ByteChunks, blob_pieces

#: The memory cache's bound, in bytes of blobs held.
MEMORY_CACHE_BYTES = 256 * 1024 * 1024
#: The largest blob the memory cache keeps; bigger ones are streamed on every read
#: (or read from the disk cache), never held by the cache.
MEMORY_CACHE_ITEM_BYTES = 16 * 1024 * 1024


class BlobCache:
    """Fetches blobs of one repo through the gateway, with memory and disk caches."""

    def __init__(
        self,
        gateway: Gateway,
        org: str,
        repo: str,
        token: str,
        disk_cache: DiskCacheConfig | None,
    ) -> None:
        self._gateway = gateway
        self._org = org
        self._repo = repo
        self._token = token
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._disk = _DiskCache(disk_cache) if disk_cache is not None else None

    @property
    def max_blob_bytes(self) -> int:
        """The largest blob the transport stores, in raw bytes."""
        return self._gateway.max_blob_bytes

    async def put(self, data: Buffer) -> BlobRef:
        """Store ``data`` as a blob and return its reference (streamed: ``data`` is not copied).

        A mutable ``data`` must not change until this returns.

        Raises:
            PayloadTooLargeError: ``data`` exceeds the transport's largest blob.
        """
        digest = await self._gateway.put_blob(self._token, self._org, self._repo, data)
        if isinstance(data, bytes):
            self._remember(digest, data)
        return BlobRef(digest, memoryview(data).nbytes)

    async def put_chunks(self, chunks: ByteChunks) -> BlobRef:
        """Store the concatenated ``chunks`` as a blob, taking them as they come.

        Each chunk is read while it is taken, never kept: a spool snapshot's
        ``chunks()`` or a blob stream can be passed as is.

        Raises:
            PayloadTooLargeError: the chunks exceed the transport's largest blob.
        """
        size = 0

        async def counted() -> AsyncIterator[memoryview]:
            nonlocal size
            async for piece in blob_pieces(chunks):
                size += len(piece)
                yield piece

        digest = await self._gateway.put_blob_chunks(self._token, self._org, self._repo, counted())
        return BlobRef(digest, size)

    async def get(self, ref: BlobRef) -> bytes:
        """Return the bytes of ``ref`` (one buffer of its size: no copy of the whole)."""
        data = self._memory.get(ref.digest)
        if data is not None:
            self._memory.move_to_end(ref.digest)
            if len(data) != ref.size:
                raise ValueError(f"blob {ref.digest} does not match its size")
            return data
        if self._disk is not None:
            data = await asyncio.to_thread(self._disk.get, ref.digest)
        if data is None:
            data = await _filled(ref.size, self.chunks(ref))
        elif len(data) != ref.size:
            raise ValueError(f"blob {ref.digest} does not match its size")
        self._remember(ref.digest, data)
        return data

    async def chunks(self, ref: BlobRef) -> AsyncGenerator[bytes, None]:
        """Yield the bytes of ``ref`` in pieces of at most `BLOB_CHUNK_BYTES`.

        Raises:
            NotFoundError: the blob is not stored.
            ValueError: the stored blob is not ``ref.size`` bytes long.
            MesaError: the transport failed, or the blob is corrupt (by the last piece):
                a reader keeps nothing of a stream that raised.
        """
        data = self._memory.get(ref.digest)
        if data is not None:
            self._memory.move_to_end(ref.digest)
            if len(data) != ref.size:
                raise ValueError(f"blob {ref.digest} does not match its size")
            for start in range(0, len(data), BLOB_CHUNK_BYTES):
                yield data[start : start + BLOB_CHUNK_BYTES]
            return
        disk = self._disk
        cached = None if disk is None else await asyncio.to_thread(disk.open, ref.digest)
        if cached is not None:
            with cached:
                if os.fstat(cached.fileno()).st_size != ref.size:
                    raise ValueError(f"blob {ref.digest} does not match its size")
                while piece := await asyncio.to_thread(cached.read, BLOB_CHUNK_BYTES):
                    yield piece
            return
        stream = await self._gateway.get_blob_chunks(self._token, self._org, self._repo, ref.digest)
        writer = None if disk is None else await asyncio.to_thread(disk.writer, ref.digest)
        try:
            async with stream:
                size = 0
                async for piece in stream:
                    size += len(piece)
                    if size > ref.size:
                        break
                    if writer is not None:
                        await asyncio.to_thread(writer.write, piece)
                    yield piece
                if size != ref.size:
                    raise ValueError(f"blob {ref.digest} does not match its size")
            if writer is not None:
                await asyncio.to_thread(writer.commit)
        finally:
            if writer is not None:
                writer.discard()

    def _remember(self, digest: str, data: bytes) -> None:
        if digest in self._memory or len(data) > MEMORY_CACHE_ITEM_BYTES:
            return
        self._memory[digest] = data
        self._memory_bytes += len(data)
        while self._memory_bytes > MEMORY_CACHE_BYTES:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= len(old)

    async def content_bytes(self, content: Content) -> bytes:
        """Return the bytes of a content (one buffer of its size: no copy of the whole)."""
        segments = content.segments
        if len(segments) == 1:
            only = segments[0]
            return only.data if isinstance(only, Inline) else await self.get(only)
        return await _filled(content.size, self.content_chunks(content))

    async def content_chunks(self, content: Content) -> AsyncGenerator[bytes, None]:
        """Yield the bytes of a content, segment by segment, never holding a whole blob."""
        for seg in content.segments:
            if isinstance(seg, Inline):
                yield seg.data
                continue
            async with contextlib.aclosing(self.chunks(seg)) as pieces:
                async for piece in pieces:
                    yield piece

    async def value_bytes(self, value: Merge) -> bytes:
        """Return what a reader sees: the content, or the materialized conflict."""
        if value.is_resolved():
            only = value.adds[0]
            return b"" if only is None else await self.content_bytes(only)
        sides = [b"" if v is None else await self.content_bytes(v) for v in value.adds]
        bases = [b"" if v is None else await self.content_bytes(v) for v in value.removes]
        return conflicts.materialize(sides, bases)

    async def value_chunks(self, value: Merge) -> AsyncGenerator[bytes, None]:
        """Yield what a reader sees, streamed; a conflict is materialized whole first."""
        if value.is_resolved():
            only = value.adds[0]
            if only is not None:
                async with contextlib.aclosing(self.content_chunks(only)) as pieces:
                    async for piece in pieces:
                        yield piece
            return
        data = await self.value_bytes(value)
        for start in range(0, len(data), BLOB_CHUNK_BYTES):
            yield data[start : start + BLOB_CHUNK_BYTES]


async def _filled(size: int, chunks: AsyncGenerator[bytes, None]) -> bytes:
    """Return the ``size`` bytes ``chunks`` yield, written into one buffer allocated once.

    The buffer is a `io.BytesIO` sized up front; ``getvalue`` then hands over the
    buffer itself (nothing else refers to it), so the whole is never copied.
    """
    out = io.BytesIO()
    if size:
        out.seek(size - 1)
        out.write(b"\0")
        out.seek(0)
    async with contextlib.aclosing(chunks) as pieces:
        async for piece in pieces:
            out.write(piece)
    if out.tell() != size:
        raise ValueError(f"read {out.tell()} bytes of a value of {size}")
    return out.getvalue()


class _DiskWriter:
    """A blob being written into the disk cache: a private file, renamed into place whole."""

    def __init__(self, cache: _DiskCache, digest: str) -> None:
        self._cache = cache
        self._digest = digest
        self._tmp = cache.root / f".{digest}.{secrets.token_hex(4)}.tmp"
        self._file: BinaryIO | None = self._tmp.open("wb")

    def write(self, piece: bytes) -> None:
        assert self._file is not None
        self._file.write(piece)

    def commit(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        self._tmp.replace(self._cache.root / self._digest)
        self._cache.evict()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)


class _DiskCache:
    """Blob files under a directory, bounded in total size (oldest access evicted first)."""

    def __init__(self, config: DiskCacheConfig) -> None:
        self.root = Path(config.path)
        self.root.mkdir(parents=True, exist_ok=True)
        if config.max_size_bytes is not None:
            self.max_bytes = config.max_size_bytes
        else:
            self.max_bytes = max(shutil.disk_usage(self.root).free // 10, 64 * 1024 * 1024)

    def get(self, digest: str) -> bytes | None:
        path = self.root / digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if digest_of(data) != digest:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)
        return data

    def open(self, digest: str) -> BinaryIO | None:
        """Return the cached file of ``digest`` at its start, checked; None if absent or bad."""
        path = self.root / digest
        try:
            file = path.open("rb")
        except FileNotFoundError:
            return None
        hasher = hashlib.sha256()
        while piece := file.read(BLOB_CHUNK_BYTES):
            hasher.update(piece)
        if hasher.hexdigest() != digest:
            file.close()
            path.unlink(missing_ok=True)
            return None
        file.seek(0)
        os.utime(path)
        return file

    def writer(self, digest: str) -> _DiskWriter:
        return _DiskWriter(self, digest)

    def evict(self) -> None:
        files = [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
        total = sum(p.stat().st_size for p in files)
        for path in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

"""Reading file values: inline bytes, blobs (cached), and materialized conflicts.

Blobs are immutable and content addressed, so caching them can never serve stale
bytes: an in-memory LRU bounded in bytes, and optionally a disk cache (files named
by digest under ``DiskCacheConfig.path``, written atomically, evicted oldest-first
beyond ``max_size_bytes``). A blob whose bytes do not hash to its digest is refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import OrderedDict
from pathlib import Path

from engine import conflicts
from engine.content import BlobRef, Content, Inline, digest_of
from engine.merge import Merge
from mesa._gateway import Gateway
from mesa._types import DiskCacheConfig

MEMORY_CACHE_BYTES = 256 * 1024 * 1024


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

    async def put(self, data: bytes) -> BlobRef:
        """Store ``data`` as a blob and return its reference."""
        digest = await self._gateway.put_blob(self._token, self._org, self._repo, data)
        self._remember(digest, data)
        return BlobRef(digest, len(data))

    async def get(self, ref: BlobRef) -> bytes:
        """Return the bytes of ``ref``."""
        data = self._memory.get(ref.digest)
        if data is not None:
            self._memory.move_to_end(ref.digest)
            return data
        if self._disk is not None:
            data = await asyncio.to_thread(self._disk.get, ref.digest)
        if data is None:
            data = await self._gateway.get_blob(self._token, self._org, self._repo, ref.digest)
            if digest_of(data) != ref.digest or len(data) != ref.size:
                raise ValueError(f"blob {ref.digest} does not match its digest or size")
            if self._disk is not None:
                await asyncio.to_thread(self._disk.put, ref.digest, data)
        self._remember(ref.digest, data)
        return data

    def _remember(self, digest: str, data: bytes) -> None:
        if digest in self._memory or len(data) > MEMORY_CACHE_BYTES // 4:
            return
        self._memory[digest] = data
        self._memory_bytes += len(data)
        while self._memory_bytes > MEMORY_CACHE_BYTES:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= len(old)

    async def content_bytes(self, content: Content) -> bytes:
        """Return the bytes of a content."""
        parts = [
            seg.data if isinstance(seg, Inline) else await self.get(seg) for seg in content.segments
        ]
        return b"".join(parts)

    async def value_bytes(self, value: Merge) -> bytes:
        """Return what a reader sees: the content, or the materialized conflict."""
        if value.is_resolved():
            only = value.adds[0]
            return b"" if only is None else await self.content_bytes(only)
        sides = [b"" if v is None else await self.content_bytes(v) for v in value.adds]
        bases = [b"" if v is None else await self.content_bytes(v) for v in value.removes]
        return conflicts.materialize(sides, bases)


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

    def put(self, digest: str, data: bytes) -> None:
        tmp = self.root / f".{digest}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.root / digest)
        self._evict()

    def _evict(self) -> None:
        files = [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
        total = sum(p.stat().st_size for p in files)
        for path in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

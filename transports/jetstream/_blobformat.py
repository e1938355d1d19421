"""The stored format of a blob: zstd frames of at most 1 MiB each, and their digests.

Invariants:

- A blob's raw bytes are cut in pieces of at most `BLOB_CHUNK_BYTES` (1 MiB); each
  piece is compressed as its own zstd frame (level `ZSTD_LEVEL`, the piece's size in
  the frame header) and the frames are stored back to back (`_Encoder`). So a frame
  decompresses to at most 1 MiB whatever the ratio (1 MiB of zeros is a 50-byte frame;
  a whole blob in one frame would expand ~30,000 times per stored byte).
- `_Decoder` reads back-to-back frames fed in any cuts, in order, and returns pieces
  of at most 1 MiB (an object of the earlier format, one frame for the whole blob,
  is cut after decompression); it hashes what comes out, and `_Decoder.finish` raises
  `TransportError` unless the bytes end on a frame boundary and hash to the digest.
- Hashing, zstd and decompression of more than `_OFFLOAD_BYTES` run on a small pool of
  threads of their own (they drop the GIL; a few threads keep few malloc arenas).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import zstandard

from transports.base import BLOB_CHUNK_BYTES, TransportError

#: zstd level of stored blobs.
ZSTD_LEVEL: Final = 3

_OFFLOAD_BYTES: Final = 256 * 1024
_WORKERS: Final = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mesa-blobs")

_T = TypeVar("_T")


async def _offload(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """Run CPU-heavy ``fn`` on the blob threads when ``size`` is large."""
    if size > _OFFLOAD_BYTES:
        return await asyncio.get_running_loop().run_in_executor(_WORKERS, fn, *args)
    return fn(*args)


class _Encoder:
    """Hashes raw pieces and compresses each as one zstd frame (one put, one piece at a time)."""

    def __init__(self, *, hash_raw: bool) -> None:
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._raw = hashlib.sha256() if hash_raw else None
        self.stored = hashlib.sha256()

    def encode(self, piece: memoryview) -> bytes:
        if self._raw is not None:
            self._raw.update(piece)
        frame: bytes = self._zstd.compress(piece)
        self.stored.update(frame)
        return frame

    def digest(self) -> str:
        assert self._raw is not None
        return self._raw.hexdigest()


class _Decoder:
    """Decompresses back-to-back zstd frames chunk by chunk and hashes what comes out."""

    def __init__(self, digest: str) -> None:
        self._digest = digest
        self._zstd = zstandard.ZstdDecompressor()
        self._frame: Any = None
        self._hash = hashlib.sha256()

    def feed(self, payloads: list[bytes]) -> list[bytes]:
        """Return the raw pieces (each at most `BLOB_CHUNK_BYTES`) the chunks decompress to."""
        out: list[bytes] = []
        for payload in payloads:
            data = payload
            while data:
                if self._frame is None:
                    self._frame = self._zstd.decompressobj()
                try:
                    raw: bytes = self._frame.decompress(data)
                except zstandard.ZstdError as exc:
                    raise TransportError(f"blob {self._digest} is corrupt: {exc}") from exc
                self._hash.update(raw)
                # More than a piece only from an object of the earlier format.
                out.extend(
                    raw[i : i + BLOB_CHUNK_BYTES] for i in range(0, len(raw), BLOB_CHUNK_BYTES)
                )
                if self._frame.eof:
                    data, self._frame = self._frame.unused_data, None
                else:
                    data = b""
        return out

    def finish(self) -> None:
        """Raise `TransportError` unless the bytes were whole and hash to the digest."""
        if self._frame is not None:
            raise TransportError(f"blob {self._digest} is corrupt: it ends inside a frame")
        if self._hash.hexdigest() != self._digest:
            raise TransportError(f"blob {self._digest} is corrupt: its bytes hash differently")

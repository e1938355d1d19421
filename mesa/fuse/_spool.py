"""The bytes of one open file: in memory while small, in a sparse temporary file beyond.

A `Spool` holds up to ``threshold`` bytes (default `SPOOL_THRESHOLD_BYTES`) in a
``bytearray``. The first write or truncate that would make it larger moves the bytes
to an anonymous temporary file (``O_TMPFILE`` where the filesystem has it: no name in
the directory, gone when the last descriptor closes) under the directory the mount is
given (default: `tempfile.gettempdir`), and from then on every operation is a
``pwrite``/``pread``/``ftruncate`` on it. A write past the end or a truncate that
extends leaves a **hole** there: nothing is zero-filled in RAM or written to disk, and
holes read as zeros. A spool truncated to 0 goes back to memory.

Limits: no write or truncate may make the file larger than ``max_size`` (default
`MAX_FILE_BYTES`, 16 GiB): it raises ``OSError(errno.EFBIG)`` and changes nothing (the
whole write is refused, where Linux would write the bytes that fit and refuse the
next write). A zero-length write never fails. Errors of the temporary file itself
(``ENOSPC``, or ``EFBIG`` from a filesystem with a lower limit) propagate as the
``OSError`` the kernel gave.

Publishing: `Spool.snapshot` freezes the current bytes as a `SpoolSnapshot` without
copying them: in memory it copies at most ``threshold`` bytes; on disk the snapshot
shares the file, and the next change to the spool first moves the spool to a copy of
it (``copy_file_range`` of the data extents only, in the kernel; holes stay holes), so
a snapshot never changes. ``SpoolSnapshot.chunks()`` yields its bytes in pieces of at
most `BLOB_CHUNK_BYTES` (a hole as a shared piece of zeros, read from nothing), which
`mesa._blobs.BlobCache.put_chunks` streams to the blob store. The file is removed when
the spool and every snapshot of it are closed.

A spool is not thread-safe: use it from one thread (the event loop). A snapshot may be
read from another thread while the spool is used, since the spool never writes a file
a snapshot holds.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import AsyncIterable, Iterator
from typing import Final

from transports.base import BLOB_CHUNK_BYTES, Buffer

#: The largest file a spool holds (16 GiB). A closed file is published whole: every
#: byte is hashed and compressed, holes too (the blob format has no holes), at ~1-2 GB/s
#: on this machine, and the mount's ordered write-behind queue waits behind it. 16 GiB
#: keeps that under a minute; `dd seek=1T` or `truncate -s 1T` is EFBIG at once
#: instead of an hour of hashing zeros. The blob store itself takes up to
#: `transports.base.MAX_BLOB_BYTES` (1 TiB) through the SDK.
MAX_FILE_BYTES: Final = 16 << 30
#: Bytes a spool keeps in memory before it moves them to a temporary file (1 MiB).
SPOOL_THRESHOLD_BYTES: Final = 1 << 20

_ZEROS: Final = memoryview(bytes(BLOB_CHUNK_BYTES))


class _File:
    """An anonymous temporary file shared by a spool and its snapshots (counted)."""

    def __init__(self, directory: str | None) -> None:
        # Closed by the last release, not a with block: its holders come and go.
        self._file = tempfile.TemporaryFile(  # noqa: SIM115
            dir=directory, prefix="mesa-spool-", buffering=0
        )
        self.fd = self._file.fileno()
        self.refs = 1

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self._file.close()


def _pread(fd: int, offset: int, size: int) -> bytes:
    """Read exactly ``size`` bytes at ``offset`` (the file is at least that long)."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise OSError(errno.EIO, "the spool file is shorter than its size")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _pwrite(fd: int, offset: int, data: Buffer) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _extents(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """Yield (start, end, is_data) runs covering [0, size): data and holes."""
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                data = size
            elif exc.errno == errno.EINVAL:  # no hole support here: all data
                yield offset, size, True
                return
            else:
                raise
        data = min(data, size)
        if data > offset:
            yield offset, data, False
        if data >= size:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        yield data, hole, True
        offset = hole


def _copy(src: int, dst: int, size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` into the empty ``dst``, holes kept as holes."""
    for start, end, is_data in _extents(src, size):
        offset = start
        while is_data and offset < end:
            try:
                copied = os.copy_file_range(src, dst, end - offset, offset, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                copied = 0
            if copied <= 0:  # unsupported here: through user space, a piece at a time
                piece = _pread(src, offset, min(BLOB_CHUNK_BYTES, end - offset))
                _pwrite(dst, offset, piece)
                copied = len(piece)
            offset += copied
    os.ftruncate(dst, size)


def _check(offset: int, size: int) -> None:
    if offset < 0 or size < 0:
        raise OSError(errno.EINVAL, "negative offset or size")


class SpoolSnapshot:
    """The bytes a spool held when `Spool.snapshot` was called; they never change."""

    def __init__(self, size: int, memory: bytes | None, file: _File | None) -> None:
        self._size = size
        self._memory = memory
        self._file = file
        self._closed = False

    @property
    def size(self) -> int:
        """The snapshot's size in bytes."""
        return self._size

    def read(self, offset: int, size: int) -> bytes:
        """Return up to ``size`` bytes at ``offset`` (fewer at the end; holes are zeros)."""
        _check(offset, size)
        self._check_open()
        size = max(0, min(size, self._size - offset))
        if self._memory is not None:
            return self._memory[offset : offset + size]
        assert self._file is not None
        return _pread(self._file.fd, offset, size) if size else b""

    def chunks(self, chunk_size: int = BLOB_CHUNK_BYTES) -> Iterator[Buffer]:
        """Yield every byte in order, in pieces of at most ``chunk_size`` (holes: zeros).

        Each piece is read when it is asked for; the whole file is never in memory.
        """
        if not 0 < chunk_size <= BLOB_CHUNK_BYTES:
            raise ValueError(f"chunk_size must be in 1..{BLOB_CHUNK_BYTES}")
        self._check_open()
        if self._memory is not None:
            view = memoryview(self._memory)
            for start in range(0, self._size, chunk_size):
                yield view[start : start + chunk_size]
            return
        assert self._file is not None
        fd = self._file.fd
        for start, end, is_data in _extents(fd, self._size):
            for offset in range(start, end, chunk_size):
                size = min(chunk_size, end - offset)
                self._check_open()
                yield _pread(fd, offset, size) if is_data else _ZEROS[:size]

    def close(self) -> None:
        """Release the snapshot (idempotent); the file goes when nothing holds it."""
        if not self._closed:
            self._closed = True
            self._memory = None
            if self._file is not None:
                self._file.release()
                self._file = None

    def __enter__(self) -> SpoolSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the snapshot is closed")


class Spool:
    """The bytes of one open file (see the module docstring).

    Args:
        data: the initial bytes (a file's value read at open).
        directory: where the temporary file goes (default: `tempfile.gettempdir`).
        threshold: bytes kept in memory at most (default `SPOOL_THRESHOLD_BYTES`).
        max_size: the largest size the file may reach (default `MAX_FILE_BYTES`).

    Raises:
        OSError: ``EFBIG`` if ``data`` is larger than ``max_size``.
    """

    def __init__(
        self,
        data: Buffer = b"",
        *,
        directory: str | os.PathLike[str] | None = None,
        threshold: int = SPOOL_THRESHOLD_BYTES,
        max_size: int = MAX_FILE_BYTES,
    ) -> None:
        if threshold < 0 or max_size < 0:
            raise ValueError("threshold and max_size must not be negative")
        self._directory = None if directory is None else os.fspath(directory)
        self._threshold = threshold
        self.max_size = max_size
        self._memory: bytearray | None = bytearray()
        self._file: _File | None = None
        self._size = 0
        self._closed = False
        self.write(0, data)

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    @property
    def on_disk(self) -> bool:
        """Whether the bytes are in the temporary file (past the threshold)."""
        return self._file is not None

    @property
    def allocated_bytes(self) -> int:
        """Bytes the temporary file takes on disk (its blocks; 0 in memory)."""
        if self._file is None:
            return 0
        return os.fstat(self._file.fd).st_blocks * 512

    def read(self, offset: int, size: int) -> bytes:
        """Return up to ``size`` bytes at ``offset`` (fewer at the end; holes are zeros)."""
        _check(offset, size)
        self._check_open()
        size = max(0, min(size, self._size - offset))
        if self._memory is not None:
            return bytes(memoryview(self._memory)[offset : offset + size])
        assert self._file is not None
        return _pread(self._file.fd, offset, size) if size else b""

    def write(self, offset: int, buf: Buffer) -> int:
        """Write ``buf`` at ``offset`` (a gap before it becomes a hole); return its length.

        Raises:
            OSError: ``EFBIG`` past ``max_size`` (nothing written), ``EINVAL`` for a
                negative offset, or what the temporary file raised.
        """
        length = memoryview(buf).nbytes
        _check(offset, length)
        self._check_open()
        if length == 0:
            return 0
        end = offset + length
        if end > self.max_size:
            raise OSError(errno.EFBIG, f"a file may hold at most {self.max_size} bytes")
        if self._memory is not None and end <= self._threshold:
            if offset > len(self._memory):
                self._memory.extend(bytes(offset - len(self._memory)))
            self._memory[offset:end] = memoryview(buf).cast("B")
        else:
            _pwrite(self._writable_fd(), offset, buf)
        self._size = max(self._size, end)
        return length

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes or extend it with a hole.

        Raises:
            OSError: ``EFBIG`` past ``max_size`` (nothing changed), ``EINVAL`` for a
                negative size, or what the temporary file raised.
        """
        _check(0, size)
        self._check_open()
        if size > self.max_size:
            raise OSError(errno.EFBIG, f"a file may hold at most {self.max_size} bytes")
        if size == self._size:
            return
        if size == 0:
            self._drop_file()
            self._memory = bytearray()
        elif self._memory is not None and size <= self._threshold:
            if size < len(self._memory):
                del self._memory[size:]
            else:
                self._memory.extend(bytes(size - len(self._memory)))
        else:
            os.ftruncate(self._writable_fd(), size)
        self._size = size

    async def fill(self, chunks: AsyncIterable[Buffer]) -> None:
        """Append every chunk (e.g. a blob stream read at open), moving to disk as it grows."""
        async for chunk in chunks:
            self.write(self._size, chunk)

    def snapshot(self) -> SpoolSnapshot:
        """Freeze the current bytes for publication (no copy on disk; see the module docstring)."""
        self._check_open()
        if self._memory is not None:
            return SpoolSnapshot(self._size, bytes(self._memory), None)
        assert self._file is not None
        self._file.refs += 1
        return SpoolSnapshot(self._size, None, self._file)

    def close(self) -> None:
        """Drop the bytes (idempotent); the temporary file goes once no snapshot holds it."""
        if not self._closed:
            self._closed = True
            self._drop_file()
            self._memory = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable_fd(self) -> int:
        """The temporary file's descriptor, created (or copied from a snapshot's) as needed."""
        if self._file is None:
            file = _File(self._directory)
            try:
                assert self._memory is not None
                _pwrite(file.fd, 0, self._memory)
            except BaseException:
                file.release()
                raise
            self._file, self._memory = file, None
        elif self._file.refs > 1:  # a snapshot holds this file: change a copy of it
            file = _File(self._directory)
            try:
                _copy(self._file.fd, file.fd, self._size)
            except BaseException:
                file.release()
                raise
            self._file.release()
            self._file = file
        return self._file.fd

    def _drop_file(self) -> None:
        if self._file is not None:
            self._file.release()
            self._file = None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the spool is closed")

"""The spool buffer of an open file: memory, then a sparse temporary file; EFBIG past the max.

No FUSE mount is needed: the spool is plain storage. Every operation is checked
against a reference ``bytearray`` (a Hypothesis state machine at small sizes with a
tiny threshold), and the properties that matter for huge files are checked on the
file itself: a write 1 TB out allocates a few blocks and no memory, holes read as
zeros, and nothing past `MAX_FILE_BYTES` is accepted.
"""

from __future__ import annotations

import errno
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from mesa.fuse._spool import MAX_FILE_BYTES, SPOOL_THRESHOLD_BYTES, Spool, SpoolSnapshot
from transports.base import BLOB_CHUNK_BYTES, MAX_BLOB_BYTES

TB = 10**12
END = TB + 5 * 10**10  # 1.05 TB: under the 1 TiB maximum


def open_files_under(directory: Path) -> int:
    """How many descriptors of this process point at files in ``directory``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            count += 1
    return count


def joined(snapshot: SpoolSnapshot, chunk_size: int = BLOB_CHUNK_BYTES) -> bytes:
    return b"".join(bytes(piece) for piece in snapshot.chunks(chunk_size))


def test_the_maximum_is_the_largest_blob() -> None:
    assert MAX_FILE_BYTES == 16 << 30 < MAX_BLOB_BYTES


def test_small_files_stay_in_memory_and_large_ones_move_to_disk(tmp_path: Path) -> None:
    with Spool(b"hello", directory=tmp_path, threshold=16) as spool:
        assert not spool.on_disk
        assert open_files_under(tmp_path) == 0
        spool.write(5, b" world, and more")  # 21 bytes: past the threshold
        assert spool.on_disk
        assert spool.read(0, 100) == b"hello world, and more"
        # Anonymous: nothing in the directory, one descriptor on a file in it.
        assert list(tmp_path.iterdir()) == []
        assert open_files_under(tmp_path) == 1
        spool.truncate(0)
        assert not spool.on_disk
        assert open_files_under(tmp_path) == 0
        spool.write(0, b"x" * 17)
        assert open_files_under(tmp_path) == 1
    assert open_files_under(tmp_path) == 0


def test_the_default_threshold_is_a_mebibyte(tmp_path: Path) -> None:
    with Spool(bytes(SPOOL_THRESHOLD_BYTES), directory=tmp_path) as spool:
        assert not spool.on_disk
        spool.write(SPOOL_THRESHOLD_BYTES, b"!")
        assert spool.on_disk
        assert spool.size == SPOOL_THRESHOLD_BYTES + 1


def test_holes_read_as_zeros_and_take_no_disk(tmp_path: Path) -> None:
    with Spool(b"head", directory=tmp_path, threshold=0) as spool:
        spool.write(10 * BLOB_CHUNK_BYTES, b"tail")
        assert spool.size == 10 * BLOB_CHUNK_BYTES + 4
        assert spool.read(0, 8) == b"head\0\0\0\0"
        assert spool.read(5 * BLOB_CHUNK_BYTES, 3) == b"\0\0\0"
        assert spool.read(10 * BLOB_CHUNK_BYTES - 2, 10) == b"\0\0tail"
        assert spool.allocated_bytes <= 64 * 1024
        spool.truncate(30 * BLOB_CHUNK_BYTES)  # extends with a hole
        assert spool.read(30 * BLOB_CHUNK_BYTES - 4, 8) == b"\0\0\0\0"
        assert spool.allocated_bytes <= 64 * 1024
        with spool.snapshot() as snapshot:
            pieces = list(snapshot.chunks())
            assert all(len(piece) <= BLOB_CHUNK_BYTES for piece in pieces)
            data = b"".join(bytes(piece) for piece in pieces)
        assert data == b"head" + bytes(10 * BLOB_CHUNK_BYTES - 4) + b"tail" + bytes(
            20 * BLOB_CHUNK_BYTES - 4
        )


def test_a_write_a_terabyte_out_costs_no_memory_and_little_disk(tmp_path: Path) -> None:
    with Spool(directory=tmp_path, max_size=MAX_BLOB_BYTES) as spool:
        tracemalloc.start()
        try:
            spool.write(TB, b"x")
            spool.truncate(END)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024
        assert spool.size == END
        assert spool.allocated_bytes <= 64 * 1024
        assert spool.read(TB - 3, 5) == b"\0\0\0x\0"
        assert spool.read(END - 1, 10) == b"\0"
        assert spool.read(END, 10) == b""
        # A snapshot and a change after it (copy on write) keep the holes too.
        with spool.snapshot() as snapshot:
            spool.write(5, b"changed")
            assert spool.allocated_bytes <= 128 * 1024
            assert snapshot.read(TB, 1) == b"x"
            assert snapshot.read(5, 7) == bytes(7)
            assert spool.read(5, 7) == b"changed"
            assert spool.read(TB, 1) == b"x"


def test_past_the_maximum_is_efbig_and_changes_nothing(tmp_path: Path) -> None:
    with Spool(b"abc", directory=tmp_path, threshold=4, max_size=10) as spool:
        for call in (
            lambda: spool.write(9, b"xy"),
            lambda: spool.write(11, b"x"),
            lambda: spool.truncate(11),
        ):
            with pytest.raises(OSError, match="at most") as refused:
                call()
            assert refused.value.errno == errno.EFBIG
            assert (spool.size, spool.read(0, 20), spool.on_disk) == (3, b"abc", False)
        assert spool.write(50, b"") == 0  # a zero-length write never fails
        assert spool.write(8, b"xy") == 2
        spool.truncate(10)
        assert spool.read(0, 20) == b"abc\0\0\0\0\0xy"
    with pytest.raises(OSError, match="at most") as too_big:
        Spool(b"x" * 11, directory=tmp_path, max_size=10)
    assert too_big.value.errno == errno.EFBIG


def test_the_default_maximum_is_enforced_on_a_real_sparse_file(tmp_path: Path) -> None:
    with Spool(directory=tmp_path) as spool:
        spool.truncate(MAX_FILE_BYTES)  # the largest file: all hole
        assert spool.size == MAX_FILE_BYTES
        for call in (
            lambda: spool.write(MAX_FILE_BYTES, b"x"),
            lambda: spool.write(MAX_FILE_BYTES - 1, b"xy"),
            lambda: spool.truncate(MAX_FILE_BYTES + 1),
            lambda: spool.truncate(999_999_999_999_999),
        ):
            with pytest.raises(OSError, match="at most") as refused:
                call()
            assert refused.value.errno == errno.EFBIG
        assert spool.size == MAX_FILE_BYTES
        spool.write(MAX_FILE_BYTES - 1, b"z")
        assert spool.read(MAX_FILE_BYTES - 2, 5) == b"\0z"
        assert spool.allocated_bytes <= 64 * 1024


def test_invalid_offsets_and_sizes_are_einval(tmp_path: Path) -> None:
    with Spool(b"abc", directory=tmp_path) as spool:
        for call in (
            lambda: spool.write(-1, b"x"),
            lambda: spool.read(-1, 1),
            lambda: spool.read(0, -1),
            lambda: spool.truncate(-1),
        ):
            with pytest.raises(OSError, match="negative") as refused:
                call()
            assert refused.value.errno == errno.EINVAL


def test_a_snapshot_never_changes_and_outlives_the_spool(tmp_path: Path) -> None:
    spool = Spool(b"0123456789" * 10, directory=tmp_path, threshold=50)
    snapshot = spool.snapshot()
    assert open_files_under(tmp_path) == 1  # shared, not copied
    spool.write(0, b"AB")
    assert open_files_under(tmp_path) == 2  # the spool moved to a copy
    second = spool.snapshot()
    spool.truncate(3)
    spool.close()
    assert joined(snapshot) == b"0123456789" * 10
    assert joined(second, 7) == b"AB23456789" + b"0123456789" * 9
    assert snapshot.read(95, 10) == b"56789"
    second.close()
    assert open_files_under(tmp_path) == 1
    snapshot.close()
    snapshot.close()
    assert open_files_under(tmp_path) == 0
    with pytest.raises(ValueError, match="closed"):
        snapshot.read(0, 1)
    with pytest.raises(ValueError, match="closed"):
        spool.write(0, b"x")


def test_a_memory_snapshot_is_a_small_copy(tmp_path: Path) -> None:
    with Spool(b"small", directory=tmp_path) as spool, spool.snapshot() as snapshot:
        spool.write(0, b"SM")
        assert joined(snapshot) == b"small"
        assert spool.read(0, 5) == b"SMall"
        assert open_files_under(tmp_path) == 0


async def test_fill_appends_a_stream_moving_to_disk_as_it_grows(tmp_path: Path) -> None:
    parts = [os.urandom(3000) for _ in range(5)]

    async def stream() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    with Spool(directory=tmp_path, threshold=4096) as spool:
        await spool.fill(stream())
        assert spool.on_disk
        assert spool.read(0, 10**6) == b"".join(parts)


@given(
    st.lists(st.binary(max_size=40), max_size=8),
    st.integers(min_value=1, max_value=17),
    st.integers(min_value=0, max_value=64),
)
@settings(max_examples=60)
def test_chunks_are_the_bytes_in_bounded_pieces(
    writes: list[bytes], chunk_size: int, threshold: int
) -> None:
    expected = bytearray()
    spool = Spool(threshold=threshold)
    try:
        for data in writes:
            offset = len(expected) + len(data) % 7  # leave holes now and then
            spool.write(offset, data)
            if data:
                expected.extend(bytes(offset - len(expected)))
                expected[offset : offset + len(data)] = data
        with spool.snapshot() as snapshot:
            pieces = list(snapshot.chunks(chunk_size))
        assert all(0 < len(piece) <= chunk_size for piece in pieces)
        assert b"".join(bytes(piece) for piece in pieces) == expected
    finally:
        spool.close()


class SpoolMachine(RuleBasedStateMachine):
    """Every spool operation against a reference bytearray, with snapshots on the side."""

    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.spool: Spool | None = None
        self.ref = bytearray()
        self.frozen: dict[int, bytes] = {}
        self.live: list[SpoolSnapshot] = []

    @initialize(threshold=st.integers(min_value=0, max_value=48), max_size=st.integers(200, 400))
    def start(self, threshold: int, max_size: int) -> None:
        self.spool = Spool(threshold=threshold, max_size=max_size)
        self.max_size = max_size

    @property
    def s(self) -> Spool:
        assert self.spool is not None
        return self.spool

    @rule(offset=st.integers(0, 450), data=st.binary(max_size=60))
    def write(self, offset: int, data: bytes) -> None:
        if data and offset + len(data) > self.max_size:
            with pytest.raises(OSError, match="at most") as refused:
                self.s.write(offset, data)
            assert refused.value.errno == errno.EFBIG
            return
        assert self.s.write(offset, data) == len(data)
        if data:
            if offset > len(self.ref):
                self.ref.extend(bytes(offset - len(self.ref)))
            self.ref[offset : offset + len(data)] = data

    @rule(size=st.integers(0, 450))
    def truncate(self, size: int) -> None:
        if size > self.max_size:
            with pytest.raises(OSError, match="at most") as refused:
                self.s.truncate(size)
            assert refused.value.errno == errno.EFBIG
            return
        self.s.truncate(size)
        if size < len(self.ref):
            del self.ref[size:]
        else:
            self.ref.extend(bytes(size - len(self.ref)))

    @rule(offset=st.integers(0, 450), size=st.integers(0, 120))
    def read(self, offset: int, size: int) -> None:
        assert self.s.read(offset, size) == bytes(self.ref[offset : offset + size])

    @rule(target=snapshots)
    def snapshot(self) -> SpoolSnapshot:
        snap = self.s.snapshot()
        self.frozen[id(snap)] = bytes(self.ref)
        self.live.append(snap)
        return snap

    @rule(snap=snapshots, chunk_size=st.integers(1, 50))
    def read_snapshot(self, snap: SpoolSnapshot, chunk_size: int) -> None:
        if snap in self.live:
            assert joined(snap, chunk_size) == self.frozen[id(snap)]
            assert snap.size == len(self.frozen[id(snap)])

    @rule(snap=consumes(snapshots))
    def close_snapshot(self, snap: SpoolSnapshot) -> None:
        if snap in self.live:
            assert joined(snap) == self.frozen[id(snap)]
            self.live.remove(snap)
        snap.close()

    @invariant()
    def same_bytes(self) -> None:
        if self.spool is not None:
            assert self.s.size == len(self.ref)
            assert self.s.read(0, 1000) == bytes(self.ref)

    def teardown(self) -> None:
        for snap in self.live:
            snap.close()
        if self.spool is not None:
            self.spool.close()


SpoolMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30)
test_spool_matches_a_bytearray = SpoolMachine.TestCase

"""Large files through the SDK and the blob cache: streamed puts and reads, bounded caches.

Each test runs on the memory transport and on a real nats-server (JetStream). Peak
memory is measured by the benchmark (``python -m simulations bench memory``), not
here: these tests check what the streaming paths return, what they store, which
errors they raise and what the caches keep.
"""

from __future__ import annotations

import array
import errno
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.content import BlobRef
from mesa._blobs import MEMORY_CACHE_ITEM_BYTES, BlobCache
from mesa._gateway import Gateway
from mesa._types import DiskCacheConfig
from mesa.errors import AuthorizationError, NotFoundError, PayloadTooLargeError
from mesa.fuse._spool import Spool
from mesa_sdk import Mesa
from tests.integration.natsutil import start_nats
from transports.auth import Claims, Keyring, generate_key, sign
from transports.base import BLOB_CHUNK_BYTES, ManualClock, SystemClock, Transport
from transports.jetstream import JetStreamTransport
from transports.memory import MemoryTransport

ORG = "acme"
KEY = generate_key()
MIB = 1 << 20


class Counting:
    """A transport wrapper counting blob reads (everything else passes through)."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_blob_chunks(self, *args: Any) -> Any:
        self.reads += 1
        return await self._inner.get_blob_chunks(*args)


@dataclass
class Env:
    transport: Transport
    mesa: Mesa

    def token(self, grant: str = "rw") -> str:
        iat = int(time.time())
        return sign(KEY, Claims(ORG, {"*": grant}, iat, iat + 3600, "test"))

    def cache(self, disk: Path | None = None, grant: str = "rw") -> tuple[BlobCache, Counting]:
        counting = Counting(self.transport)
        config = None if disk is None else DiskCacheConfig(str(disk))
        gateway = Gateway(counting)  # type: ignore[arg-type]
        return BlobCache(gateway, ORG, "app", self.token(grant), config), counting


@asynccontextmanager
async def memory_env() -> AsyncIterator[Env]:
    keyring = Keyring()
    keyring.add(KEY, ORG)
    transport = MemoryTransport(keyring, ManualClock(int(time.time() * 1000)))
    mesa = Mesa(org=ORG, api_key=KEY, transport=transport)
    await mesa.repos.create("app")
    try:
        yield Env(transport, mesa)
    finally:
        await transport.aclose()


@asynccontextmanager
async def jetstream_env() -> AsyncIterator[Env]:
    keyring = Keyring()
    keyring.add(KEY, ORG)
    with tempfile.TemporaryDirectory(prefix="mesa-nats-") as tmp:
        server = start_nats(Path(tmp))
        try:
            transport = await JetStreamTransport.connect(
                [server.url], keyring=keyring, clock=SystemClock()
            )
            try:
                mesa = Mesa(org=ORG, api_key=KEY, transport=transport)
                await mesa.repos.create("app")
                yield Env(transport, mesa)
            finally:
                await transport.aclose()
        finally:
            server.stop()


@pytest.fixture(
    params=[
        pytest.param(memory_env, id="memory"),
        pytest.param(jetstream_env, id="jetstream", marks=pytest.mark.integration),
    ]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    factory: Any = request.param
    context: AbstractAsyncContextManager[Env] = factory()
    async with context as made:
        yield made


def pieces_of(data: bytes, size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]


async def collect(cache: BlobCache, ref: BlobRef) -> list[bytes]:
    return [piece async for piece in cache.chunks(ref)]


# -- the blob cache ------------------------------------------------------------------


async def test_puts_whole_or_chunked_give_one_reference(env: Env) -> None:
    cache, _ = env.cache()
    data = os.urandom(3 * MIB + 17)
    digest = hashlib.sha256(data).hexdigest()
    expected = BlobRef(digest, len(data))
    assert await cache.put(data) == expected
    assert await cache.put(bytearray(data)) == expected
    assert await cache.put(memoryview(data)) == expected
    assert await cache.put_chunks(pieces_of(data, 300_000)) == expected

    async def streamed() -> AsyncIterator[bytes]:
        for piece in pieces_of(data, 1_000_000):
            yield bytes(piece)

    assert await cache.put_chunks(streamed()) == expected
    fresh, _ = env.cache()
    got = await fresh.get(expected)
    assert type(got) is bytes
    assert got == data
    pieces = await collect(fresh, expected)
    assert all(0 < len(piece) <= BLOB_CHUNK_BYTES for piece in pieces)
    assert b"".join(pieces) == data


async def test_a_spool_snapshot_streams_into_a_blob(env: Env, tmp_path: Path) -> None:
    cache, _ = env.cache()
    with Spool(b"start", directory=tmp_path, threshold=1000) as spool:
        spool.write(5 * MIB, b"end")  # a hole of 5 MiB between
        with spool.snapshot() as snapshot:
            ref = await cache.put_chunks(snapshot.chunks())
    expected = b"start" + bytes(5 * MIB - 5) + b"end"
    assert ref == BlobRef(hashlib.sha256(expected).hexdigest(), len(expected))
    fresh, _ = env.cache()
    with Spool(directory=tmp_path, threshold=1000) as back:
        await back.fill(fresh.chunks(ref))
        assert back.size == len(expected)
        assert back.read(5 * MIB - 2, 10) == b"\0\0end"


async def test_the_memory_cache_keeps_no_large_blob(env: Env) -> None:
    small = os.urandom(100_000)
    large = os.urandom(MEMORY_CACHE_ITEM_BYTES + 1)
    writer, _ = env.cache()
    small_ref, large_ref = await writer.put(small), await writer.put(large)
    cache, counting = env.cache()
    for _ in range(2):
        assert await cache.get(small_ref) == small
    assert counting.reads == 1
    for _ in range(2):
        assert await cache.get(large_ref) == large
    assert b"".join(await collect(cache, large_ref)) == large
    assert counting.reads == 4  # read from the transport every time


async def test_the_disk_cache_is_written_as_a_blob_streams_and_checked(
    env: Env, tmp_path: Path
) -> None:
    data = os.urandom(2 * MIB + 3)
    writer, _ = env.cache()
    ref = await writer.put(data)
    cache, counting = env.cache(disk=tmp_path)
    assert b"".join(await collect(cache, ref)) == data
    assert (tmp_path / ref.digest).read_bytes() == data
    assert os.listdir(tmp_path) == [ref.digest]  # no temporary left
    again, again_counting = env.cache(disk=tmp_path)
    assert await again.get(ref) == data
    assert b"".join(await collect(again, ref)) == data
    assert again_counting.reads == 0
    # A damaged cache file is dropped and the blob fetched again.
    (tmp_path / ref.digest).write_bytes(b"damaged")
    third, third_counting = env.cache(disk=tmp_path)
    assert b"".join(await collect(third, ref)) == data
    assert third_counting.reads == 1
    assert (tmp_path / ref.digest).read_bytes() == data
    assert counting.reads == 1


async def test_a_reader_stopping_early_leaves_no_partial_cache_file(
    env: Env, tmp_path: Path
) -> None:
    writer, _ = env.cache()
    ref = await writer.put(os.urandom(3 * MIB))
    cache, _ = env.cache(disk=tmp_path)
    pieces = cache.chunks(ref)
    await anext(pieces)
    await pieces.aclose()
    assert os.listdir(tmp_path) == []


async def test_stream_errors_are_public(env: Env) -> None:
    cache, _ = env.cache()
    ref = await cache.put(os.urandom(200_000))
    with pytest.raises(ValueError, match="size"):
        await cache.get(BlobRef(ref.digest, ref.size + 1))
    fresh, _ = env.cache()
    with pytest.raises(ValueError, match="size"):
        await fresh.get(BlobRef(ref.digest, ref.size - 1))
    with pytest.raises(NotFoundError):
        await fresh.get(BlobRef(hashlib.sha256(b"never").hexdigest(), 5))
    reader, _ = env.cache(grant="ro")
    with pytest.raises(AuthorizationError):
        await reader.put(os.urandom(100_000))
    with pytest.raises(AuthorizationError):
        await reader.put_chunks([b"x" * 100_000])
    env.transport.max_blob_bytes = MIB
    with pytest.raises(PayloadTooLargeError):
        await cache.put_chunks(pieces_of(os.urandom(MIB + 1), 4096))


# -- the SDK -------------------------------------------------------------------------


async def test_sdk_writes_and_reads_large_files_from_any_buffer(env: Env) -> None:
    data = os.urandom(5 * MIB + 11)
    words = array.array("I", os.urandom(3 * MIB))
    async with env.mesa.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/bytes.bin", data)
        await fs.write("/acme/app/view.bin", memoryview(data)[7:])
        await fs.write("/acme/app/array.bin", memoryview(words))
        buffer = bytearray(data)
        await fs.write("/acme/app/bytearray.bin", buffer)
        buffer[:4] = b"XXXX"  # changed after the write returned: the file keeps its bytes
        await fs.append("/acme/app/bytes.bin", b"+tail")
        assert await fs.read("/acme/app/bytes.bin") == data + b"+tail"
        assert await fs.read("/acme/app/view.bin") == data[7:]
        assert await fs.read("/acme/app/array.bin") == words.tobytes()
        assert await fs.read("/acme/app/bytearray.bin") == data
        assert (await fs.stat("/acme/app/bytes.bin")).size == len(data) + 5
    async with env.mesa.fs.mount(repos=["app"]) as other:
        assert await other.read("/acme/app/array.bin") == words.tobytes()


async def test_sdk_refuses_a_file_over_the_largest_blob_with_efbig(env: Env) -> None:
    env.transport.max_blob_bytes = 200_000
    async with env.mesa.fs.mount(repos=["app"]) as fs:
        with pytest.raises(OSError, match="larger than") as refused:
            await fs.write("/acme/app/big.bin", secrets.token_bytes(200_001))
        assert refused.value.errno == errno.EFBIG
        assert not await fs.exists("/acme/app/big.bin")
        await fs.write("/acme/app/big.bin", secrets.token_bytes(200_000))
        assert (await fs.stat("/acme/app/big.bin")).size == 200_000

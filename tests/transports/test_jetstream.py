"""What only the JetStream transport promises: connection limits, payload limits, resume.

The shared contract runs in test_contract.py; these tests cover what a real server
adds: unreachable servers, the server's max_payload (headers included), consumers
lost with a server restart or deleted behind the transport's back, and the name
mapping of streams and buckets.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import zstandard
from nats.js import api

from engine.ids import change_id_from_bytes
from tests.integration.natsutil import NatsServer, free_port, start_nats
from transports.auth import Claims, Keyring, generate_key, sign
from transports.base import (
    BLOB_CHUNK_BYTES,
    Appended,
    Delivery,
    LogId,
    PayloadTooLargeError,
    TransportError,
    UnavailableError,
)
from transports.jetstream import (
    HEADER_RESERVE,
    MAX_MSG_ID_BYTES,
    JetStreamSubscription,
    JetStreamTransport,
    blob_bucket,
    log_subject,
    stream_name,
)

pytestmark = pytest.mark.integration

ORG = "acme"
REPO = "main"
CHANGE = change_id_from_bytes(bytes(range(16)))
OTHER_CHANGE = change_id_from_bytes(bytes(range(16, 32)))
LOG = LogId(ORG, REPO, CHANGE)
# Generous: CI machines are slow, but "never hang" must still hold.
CONNECT_BOUND_S = 15.0
DELIVERY_TIMEOUT_S = 20.0


@pytest.fixture
def api_key() -> str:
    return generate_key()


@pytest.fixture
def keyring(api_key: str) -> Keyring:
    ring = Keyring()
    ring.add(api_key, ORG)
    return ring


@pytest.fixture
def token(api_key: str) -> str:
    iat = int(time.time())
    return sign(api_key, Claims(ORG, {"*": "rw"}, iat, iat + 3600, "test-mount"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def transport(server: NatsServer, keyring: Keyring) -> AsyncIterator[JetStreamTransport]:
    transport = await JetStreamTransport.connect([server.url], keyring=keyring)
    try:
        yield transport
    finally:
        await transport.aclose()


async def append_retrying(
    transport: JetStreamTransport, token: str, log: LogId, payload: bytes, msg_id: str
) -> Appended:
    """Append, retrying with the same msg_id while the server is unreachable."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while True:
        try:
            return await transport.append(token, log, payload, msg_id=msg_id)
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def take(subscription: JetStreamSubscription, count: int) -> list[Delivery]:
    entries = aiter(subscription)
    return [await asyncio.wait_for(anext(entries), DELIVERY_TIMEOUT_S) for _ in range(count)]


def assert_chain(
    deliveries: list[Delivery], appended: list[Appended], payloads: list[bytes]
) -> None:
    """Deliveries are exactly the appends, in order, each naming its predecessor."""
    assert [d.payload for d in deliveries] == payloads
    assert [d.seq for d in deliveries] == [a.seq for a in appended]
    times = [d.time_ms for d in deliveries]
    assert times == sorted(times)
    assert all(t > 0 for t in times)
    assert [d.prev_seq for d in deliveries] == [0] + [a.seq for a in appended[:-1]]


# -- connecting ------------------------------------------------------------------


async def test_unreachable_server_is_unavailable_within_the_connect_timeout(
    keyring: Keyring,
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="cannot reach"):
        await JetStreamTransport.connect([url], keyring=keyring, connect_timeout_s=2.0)
    assert time.monotonic() - started < CONNECT_BOUND_S


async def test_a_server_that_never_answers_is_unavailable_within_the_connect_timeout(
    keyring: Keyring,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never send INFO

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(UnavailableError):
            await JetStreamTransport.connect(
                [f"nats://127.0.0.1:{port}"], keyring=keyring, connect_timeout_s=2.0
            )
        assert time.monotonic() - started < CONNECT_BOUND_S
    finally:
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def test_a_server_without_jetstream_is_unavailable(tmp_path: Path, keyring: Keyring) -> None:
    server = start_nats(tmp_path, jetstream=False)
    try:
        with pytest.raises(UnavailableError, match="JetStream is not enabled"):
            await JetStreamTransport.connect([server.url], keyring=keyring, connect_timeout_s=5.0)
    finally:
        server.stop()


async def test_closed_transport_is_unavailable(transport: JetStreamTransport, token: str) -> None:
    await transport.aclose()
    await transport.aclose()
    with pytest.raises(UnavailableError):
        await transport.append(token, LOG, b"x", msg_id="x")
    with pytest.raises(UnavailableError):
        await transport.kv_get(token, f"{ORG}.{REPO}.k")


# -- payload limits --------------------------------------------------------------


async def test_payload_limit_counts_headers_and_keeps_the_connection(
    tmp_path: Path, keyring: Keyring, token: str
) -> None:
    max_payload = 64 * 1024
    server = start_nats(tmp_path, max_payload=max_payload)
    transport = await JetStreamTransport.connect([server.url], keyring=keyring)
    try:
        assert transport.max_payload_bytes == max_payload - HEADER_RESERVE
        # Just above what the server itself accepts, and just above our own limit.
        for size in (max_payload + 1, transport.max_payload_bytes + 1):
            with pytest.raises(PayloadTooLargeError):
                await transport.append(token, LOG, b"x" * size, msg_id=f"big-{size}")
        assert await transport.last_seq(token, LOG) == 0
        # The largest payload with the longest msg_id fits, on the same connection.
        longest_id = "i" * MAX_MSG_ID_BYTES
        fits = await transport.append(
            token, LOG, b"y" * transport.max_payload_bytes, msg_id=longest_id
        )
        assert await transport.last_seq(token, LOG) == fits.seq
        with pytest.raises(ValueError, match="msg_id"):
            await transport.append(token, LOG, b"z", msg_id=longest_id + "i")
        with pytest.raises(PayloadTooLargeError):
            await transport.kv_put(token, f"{ORG}.{REPO}.k", b"v" * (max_payload + 1))
    finally:
        await transport.aclose()
        server.stop()


# -- appends ---------------------------------------------------------------------


async def test_a_retry_returns_the_original_time_even_from_another_change(
    transport: JetStreamTransport, token: str
) -> None:
    first = await transport.append(token, LOG, b"op", msg_id="mount.1")
    await asyncio.sleep(0.01)
    retry = await transport.append(token, LogId(ORG, REPO, OTHER_CHANGE), b"op", msg_id="mount.1")
    assert retry == first
    assert await transport.last_seq(token, LogId(ORG, REPO, OTHER_CHANGE)) == 0


async def test_entries_land_in_the_mapped_stream_and_subject(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    log = LogId(ORG, "My_Repo", CHANGE)
    entry = await transport.append(token, log, b"payload", msg_id="m1")
    nc = await nats.connect(server.url)
    try:
        msg = await nc.jetstream().get_msg(stream_name(ORG, "My_Repo"), seq=entry.seq)
        assert msg.subject == log_subject(log) == f"mesa.{ORG}.My_Repo.log.{CHANGE}"
        assert msg.data == b"payload"
        info = await nc.jetstream().stream_info(stream_name(ORG, "My_Repo"))
        assert info.config.duplicate_window == 120
        assert info.config.deny_delete
    finally:
        await nc.close()


def test_names_are_injective_and_safe_on_case_insensitive_file_systems() -> None:
    repos = ["main", "Main", "MAIN", "m_ain", "m_", "m__ain", "M_ain", "a-b", "a_b", "A_b", "a_B"]
    names = [stream_name(ORG, repo) for repo in repos]
    assert len({name.lower() for name in names}) == len(repos)
    buckets = [blob_bucket(ORG, repo) for repo in repos]
    assert len({bucket.lower() for bucket in buckets}) == len(repos)
    # Orgs never contain "_", so org and repo cannot trade characters.
    assert stream_name("a-b", "c") != stream_name("a", "b-c")
    long_upper = "X" * 100
    assert len(stream_name("o" * 63, long_upper)) <= 200
    assert len(f"OBJ_{blob_bucket('o' * 63, long_upper)}") <= 220
    assert stream_name(ORG, long_upper) != stream_name(ORG, "X" * 99)


async def stored_payloads(server: NatsServer, log: LogId) -> list[bytes]:
    """Every payload stored on ``log``'s subject, in order, read straight from the stream."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        stream = stream_name(log.org, log.repo)
        last = (await js.stream_info(stream)).state.last_seq
        messages = [await js.get_msg(stream, seq) for seq in range(1, last + 1)]
        return [m.data or b"" for m in messages if m.subject == log_subject(log)]
    finally:
        await nc.close()


@pytest.mark.parametrize("how", ["restart", "kill"])
async def test_a_retry_after_the_server_restarts_is_deduplicated(
    server: NatsServer, transport: JetStreamTransport, token: str, how: str
) -> None:
    """JetStream rebuilds its msg-id window from the file store when a stream recovers."""
    first = await transport.append(token, LOG, b"op", msg_id="mount.1")
    if how == "kill":
        server.kill()
    await asyncio.to_thread(server.restart)
    retry = await append_retrying(transport, token, LOG, b"op", "mount.1")
    assert retry.seq == first.seq
    assert await stored_payloads(server, LOG) == [b"op"]


# -- while the server is away ------------------------------------------------------


async def test_a_call_made_while_the_server_is_away_waits_for_it(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    await transport.append(token, LOG, b"one", msg_id="1")
    await asyncio.to_thread(server.stop)
    second = asyncio.create_task(transport.append(token, LOG, b"two", msg_id="2"))
    await asyncio.sleep(0.5)
    assert not second.done()
    await asyncio.to_thread(server.start)
    await asyncio.wait_for(second, DELIVERY_TIMEOUT_S)
    assert await stored_payloads(server, LOG) == [b"one", b"two"]


async def test_what_failed_while_the_server_was_away_never_lands_later(
    server: NatsServer, keyring: Keyring, token: str
) -> None:
    """A call that timed out while disconnected was not sent, and is not sent later.

    nats-py queues publishes made while disconnected and writes them after the
    reconnect: a failed append and a failed compare-and-set would land then.
    """
    transport = await JetStreamTransport.connect([server.url], keyring=keyring, request_timeout_s=1)
    key = f"{ORG}.{REPO}.k"
    try:
        await transport.append(token, LOG, b"before", msg_id="before")
        revision = await transport.kv_put(token, key, b"v1")
        await asyncio.to_thread(server.stop)
        started = time.monotonic()
        with pytest.raises(UnavailableError) as append_error:
            await transport.append(token, LOG, b"ghost", msg_id="ghost")
        assert time.monotonic() - started >= 0.9, "failed before the request timeout"
        with pytest.raises(UnavailableError):
            await transport.kv_put(token, key, b"ghost", expected_revision=revision)
        message = str(append_error.value)
        assert "not connected" in message
        assert f"127.0.0.1:{server.port}" in message
        assert "reconnecting" in message.lower()
        await asyncio.to_thread(server.start)
        await append_retrying(transport, token, LOG, b"after", "after")
        assert await stored_payloads(server, LOG) == [b"before", b"after"]
        entry = await transport.kv_get(token, key)
        assert entry is not None
        assert (entry.value, entry.revision) == (b"v1", revision)
    finally:
        await transport.aclose()


async def test_what_nats_py_queued_before_the_disconnect_is_not_sent_after_it(
    server: NatsServer, keyring: Keyring, token: str
) -> None:
    """A publish still queued in nats-py when the connection breaks is dropped.

    White box: the publish is put in nats-py's queue (``_pending``) without waking its
    flusher, as when the server goes away between a publish and the next flush. A
    fresh connection sends no ping in its first 10 s, so nothing else flushes it.
    """
    transport = await JetStreamTransport.connect([server.url], keyring=keyring)
    try:
        await transport.append(token, LOG, b"before", msg_id="before")
        nc = transport._conn.nc
        command = b"PUB " + log_subject(LOG).encode() + b" 5\r\nghost\r\n"
        nc._pending.append(command)
        nc._pending_data_size += len(command)
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await append_retrying(transport, token, LOG, b"after", "after")
        assert await stored_payloads(server, LOG) == [b"before", b"after"]
    finally:
        await transport.aclose()


def test_the_nats_py_internals_the_connection_relies_on_are_there() -> None:
    """`_Connection._drop_unsent` empties nats-py's queue of unsent commands."""
    client = nats.aio.client.Client()
    assert isinstance(client._pending, list)
    assert isinstance(client._pending_data_size, int)


# -- subscriptions ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["restart", "kill"])
async def test_a_subscription_resumes_after_the_server_restarts(
    server: NatsServer, transport: JetStreamTransport, token: str, how: str
) -> None:
    subscription = await transport.subscribe(token, LOG, after_seq=0)
    try:
        payloads = [b"entry-%d" % i for i in range(10)]
        appended = []
        for i, payload in enumerate(payloads[:5]):
            appended.append(await transport.append(token, LOG, payload, msg_id=f"m{i}"))
            # Another change interleaves: the change's sequences have gaps.
            await transport.append(token, LogId(ORG, REPO, OTHER_CHANGE), b"o", msg_id=f"o{i}")
        before = await take(subscription, 5)

        if how == "kill":
            server.kill()
        await asyncio.to_thread(server.restart)

        for i, payload in enumerate(payloads[5:], start=5):
            appended.append(await append_retrying(transport, token, LOG, payload, f"m{i}"))
        after = await take(subscription, 5)
        assert_chain(before + after, appended, payloads)

        # Nothing else arrives: no repeats after the resume.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(subscription)), 1.5)
    finally:
        await subscription.aclose()


async def test_a_subscription_resumes_when_its_consumer_is_deleted(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    first = await transport.append(token, LOG, b"one", msg_id="1")
    subscription = await transport.subscribe(token, LOG, after_seq=0)
    try:
        assert [d.payload for d in await take(subscription, 1)] == [b"one"]
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            stream = stream_name(ORG, REPO)
            for consumer in await js.consumers_info(stream):
                await js.delete_consumer(stream, consumer.name)
        finally:
            await nc.close()
        second = await transport.append(token, LOG, b"two", msg_id="2")
        third = await transport.append(token, LOG, b"three", msg_id="3")
        got = await take(subscription, 2)
        assert [(d.seq, d.prev_seq, d.payload) for d in got] == [
            (second.seq, first.seq, b"two"),
            (third.seq, second.seq, b"three"),
        ]
    finally:
        await subscription.aclose()


async def test_closing_a_subscription_deletes_its_consumer(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    subscription = await transport.subscribe(token, LOG, after_seq=0)
    await subscription.aclose()
    await subscription.aclose()
    nc = await nats.connect(server.url)
    try:
        assert await nc.jetstream().consumers_info(stream_name(ORG, REPO)) == []
    finally:
        await nc.close()


async def test_many_entries_arrive_in_order_without_gaps(
    transport: JetStreamTransport, token: str
) -> None:
    count = 2000
    subscription = await transport.subscribe(token, LOG, after_seq=0)
    try:
        appended: list[Appended] = []
        for start in range(0, count, 100):
            appended += await asyncio.gather(
                *(
                    transport.append(token, LOG, b"%06d" % i + b"." * 500, msg_id=f"bulk-{i}")
                    for i in range(start, start + 100)
                )
            )
        got = await take(subscription, count)
        seqs = [d.seq for d in got]
        assert seqs == sorted(a.seq for a in appended)
        assert [d.prev_seq for d in got] == [0, *seqs[:-1]]
        assert {d.payload[:6] for d in got} == {b"%06d" % i for i in range(count)}
    finally:
        await subscription.aclose()


# -- blobs: the stored format and streaming ----------------------------------------


async def raw_chunks(nc: nats.NATS, repo: str, digest: str) -> list[bytes]:
    """The chunk messages of a stored blob object, straight from its stream."""
    bucket = blob_bucket(ORG, repo)
    info = await (await nc.jetstream().object_store(bucket)).get_info(digest)
    sub = await nc.jetstream().subscribe(
        f"$O.{bucket}.C.{info.nuid}", stream=f"OBJ_{bucket}", ordered_consumer=True
    )
    try:
        return [(await sub.next_msg(DELIVERY_TIMEOUT_S)).data for _ in range(info.chunks)]
    finally:
        await sub.unsubscribe()


def frame_ends(stored: bytes) -> list[tuple[int, int]]:
    """(offset where each zstd frame ends, its raw size) along the stored bytes."""
    ends: list[tuple[int, int]] = []
    offset = 0
    while offset < len(stored):
        frame = zstandard.ZstdDecompressor().decompressobj()
        raw = frame.decompress(stored[offset:])
        assert frame.eof
        offset = len(stored) - len(frame.unused_data)
        ends.append((offset, len(raw)))
    return ends


async def test_a_blob_is_stored_as_frames_that_no_chunk_straddles(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    data = os.urandom(2 * BLOB_CHUNK_BYTES + 5) + bytes(40 * BLOB_CHUNK_BYTES) + b"tail"
    digest = await transport.put_blob_chunks(token, ORG, REPO, [data[:3], data[3:]])
    nc = await nats.connect(server.url)
    try:
        chunks = await raw_chunks(nc, REPO, digest)
        # nats-py's own reader accepts the object (its digest and size are right).
        store = await nc.jetstream().object_store(blob_bucket(ORG, REPO))
        assert (await store.get(digest)).data == b"".join(chunks)
    finally:
        await nc.close()
    ends = frame_ends(b"".join(chunks))
    assert all(raw <= BLOB_CHUNK_BYTES for _, raw in ends)
    assert sum(raw for _, raw in ends) == len(data)
    # Each frame is cut in 128 KiB chunks of its own: no chunk holds bytes of two frames.
    expected: list[int] = []
    begin = 0
    for end, _ in ends:
        expected += [min(128 * 1024, end - at) for at in range(begin, end, 128 * 1024)]
        begin = end
    assert [len(chunk) for chunk in chunks] == expected


async def test_a_blob_of_the_earlier_format_still_reads(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    """Objects written whole (one zstd frame, by nats-py's put) stream in bounded pieces."""
    data = bytes(3 * BLOB_CHUNK_BYTES) + os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    await transport.put_blob(token, ORG, REPO, b"creates the bucket")
    nc = await nats.connect(server.url)
    try:
        store = await nc.jetstream().object_store(blob_bucket(ORG, REPO))
        compressed = zstandard.ZstdCompressor(level=3).compress(data)
        meta = api.ObjectMeta(name=digest, options=api.ObjectMetaOptions(max_chunk_size=128 * 1024))
        await store.put(digest, compressed, meta=meta)
    finally:
        await nc.close()
    assert await transport.get_blob(token, ORG, REPO, digest) == data
    pieces = [piece async for piece in await transport.get_blob_chunks(token, ORG, REPO, digest)]
    assert b"".join(pieces) == data
    assert all(len(piece) <= BLOB_CHUNK_BYTES for piece in pieces)
    # Every read, whole or streamed, deleted its consumer.
    nc = await nats.connect(server.url)
    try:
        assert await nc.jetstream().consumers_info(f"OBJ_{blob_bucket(ORG, REPO)}") == []
    finally:
        await nc.close()


async def test_a_corrupt_blob_fails_its_stream_by_the_end(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    data = os.urandom(BLOB_CHUNK_BYTES * 2)
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    await transport.put_blob(token, ORG, REPO, b"creates the bucket")
    nc = await nats.connect(server.url)
    try:
        store = await nc.jetstream().object_store(blob_bucket(ORG, REPO))
        await store.put(wrong, zstandard.ZstdCompressor().compress(data))
        await store.put(hashlib.sha256(data).hexdigest(), b"not zstd at all")
    finally:
        await nc.close()
    with pytest.raises(TransportError, match="corrupt"):
        await transport.get_blob(token, ORG, REPO, wrong)
    stream = await transport.get_blob_chunks(token, ORG, REPO, wrong)
    with pytest.raises(TransportError, match="hash differently"):
        async for _ in stream:
            pass
    with pytest.raises(TransportError, match="corrupt"):
        await transport.get_blob(token, ORG, REPO, hashlib.sha256(data).hexdigest())


async def test_a_refused_or_failed_put_leaves_no_chunks(
    server: NatsServer, transport: JetStreamTransport, token: str
) -> None:
    bucket = blob_bucket(ORG, REPO)
    await transport.put_blob(token, ORG, REPO, b"creates the bucket")
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        before = (await js.stream_info(f"OBJ_{bucket}")).state.messages
        transport.max_blob_bytes = 3 * BLOB_CHUNK_BYTES
        with pytest.raises(PayloadTooLargeError):
            await transport.put_blob_chunks(token, ORG, REPO, [os.urandom(BLOB_CHUNK_BYTES)] * 4)

        async def broken() -> AsyncIterator[bytes]:
            yield os.urandom(2 * BLOB_CHUNK_BYTES)
            raise RuntimeError("the source broke")

        with pytest.raises(RuntimeError):
            await transport.put_blob_chunks(token, ORG, REPO, broken())
        # A put of bytes already stored sends its chunks, then drops them.
        again = os.urandom(BLOB_CHUNK_BYTES)
        await transport.put_blob(token, ORG, REPO, again)
        stored = (await js.stream_info(f"OBJ_{bucket}")).state.messages
        await transport.put_blob_chunks(token, ORG, REPO, [again])
        assert (await js.stream_info(f"OBJ_{bucket}")).state.messages == stored
        assert stored > before
        # Nothing of the refused puts is left: only the last blob's chunks and meta.
        assert (
            stored - before
            == len(await raw_chunks(nc, REPO, hashlib.sha256(again).hexdigest())) + 1
        )
    finally:
        await nc.close()

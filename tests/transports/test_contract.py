"""The transport contract: every `Transport` passes these tests (see transports/base.py).

Tests reach the transport only through the protocol and the `TransportEnv` fixture, so
the same suite runs against the in-memory fake and the real JetStream transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from engine.ids import change_id_from_bytes
from transports.auth import Claims, generate_key, sign
from transports.base import (
    BLOB_CHUNK_BYTES,
    MAX_BLOB_BYTES,
    Appended,
    BlobStream,
    Delivery,
    InvalidNameError,
    KvEntry,
    LogId,
    MissingError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RevisionMismatchError,
    Subscription,
    TokenRejectedError,
)

from .conftest import TransportEnv

TIMEOUT_S = 5.0
REPO = "main"
OTHER_REPO = "other"
CHANGE_A = change_id_from_bytes(bytes(range(16)))
CHANGE_B = change_id_from_bytes(bytes(range(16, 32)))


def log_a(env: TransportEnv) -> LogId:
    return LogId(env.org, REPO, CHANGE_A)


def log_b(env: TransportEnv) -> LogId:
    return LogId(env.org, REPO, CHANGE_B)


def admin(env: TransportEnv) -> str:
    return env.sign({"*": "rw"})


class expect:  # noqa: N801 (reads as a constructor in assertions)
    """Matches the `Delivery` of an append: seq, prev_seq, payload, and time when known.

    A transport may leave `Appended.time_ms` unknown (None) rather than pay another
    round trip; the delivery always carries the sequencer's time.
    """

    def __init__(self, appended: Appended, prev_seq: int, payload: bytes) -> None:
        self.appended, self.prev_seq, self.payload = appended, prev_seq, payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delivery):
            return NotImplemented
        time_ok = (
            other.time_ms > 0
            if self.appended.time_ms is None
            else other.time_ms == self.appended.time_ms
        )
        return (other.seq, other.prev_seq, other.payload) == (
            self.appended.seq,
            self.prev_seq,
            self.payload,
        ) and time_ok

    def __repr__(self) -> str:
        return f"expect({self.appended!r}, {self.prev_seq}, {self.payload!r})"


async def take(entries: AsyncIterator[Delivery], count: int) -> list[Delivery]:
    """Return the next ``count`` deliveries, failing if one does not come in time."""
    return [await asyncio.wait_for(anext(entries), TIMEOUT_S) for _ in range(count)]


async def drain(subscription: Subscription) -> list[Delivery]:
    """Collect deliveries until the subscription ends."""
    return [delivery async for delivery in subscription]


async def expire(env: TransportEnv, ttl_s: int) -> None:
    """Move the transport's time past the expiry of a token signed now with ``ttl_s``."""
    if env.clock_advance is not None:
        env.clock_advance(ttl_s * 1000 + 1)
    else:
        await asyncio.sleep(ttl_s + 0.2)


# -- logs ------------------------------------------------------------------------


async def test_appends_of_two_changes_share_one_increasing_sequence(
    transport_env: TransportEnv,
) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    plan = [(log_a(env), b"a1"), (log_b(env), b"b1"), (log_a(env), b"a2")]
    plan += [(log_b(env), b"b2"), (log_a(env), b"a3")]
    appended: list[Appended] = []
    for i, (log, payload) in enumerate(plan):
        appended.append(await t.append(token, log, payload, msg_id=f"m{i}"))

    seqs = [a.seq for a in appended]
    assert seqs == sorted(set(seqs))
    known_times = [a.time_ms for a in appended if a.time_ms is not None]
    assert known_times == sorted(known_times)
    a1, b1, a2, b2, a3 = appended
    assert await t.last_seq(token, log_a(env)) == a3.seq
    assert await t.last_seq(token, log_b(env)) == b2.seq

    sub_a = await t.subscribe(token, log_a(env), after_seq=0)
    got_a = await take(aiter(sub_a), 3)
    await sub_a.aclose()
    assert [d.payload for d in got_a] == [b"a1", b"a2", b"a3"]
    assert [d.seq for d in got_a] == [a1.seq, a2.seq, a3.seq]
    assert [d.prev_seq for d in got_a] == [0, a1.seq, a2.seq]
    assert got_a == [expect(a1, 0, b"a1"), expect(a2, a1.seq, b"a2"), expect(a3, a2.seq, b"a3")]
    delivered_times = [d.time_ms for d in got_a]
    assert delivered_times == sorted(delivered_times)
    # Another change's entry sits between a1 and a2: a change's seqs have gaps.
    assert a1.seq < b1.seq < a2.seq

    sub_b = await t.subscribe(token, log_b(env), after_seq=0)
    got_b = await take(aiter(sub_b), 2)
    await sub_b.aclose()
    assert [(d.seq, d.prev_seq, d.payload) for d in got_b] == [
        (b1.seq, 0, b"b1"),
        (b2.seq, b1.seq, b"b2"),
    ]


async def test_last_seq_of_an_empty_log_is_zero(transport_env: TransportEnv) -> None:
    env = transport_env
    assert await env.transport.last_seq(env.sign({REPO: "ro"}), log_a(env)) == 0


async def test_retried_append_returns_the_original_and_appends_once(
    transport_env: TransportEnv,
) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    first = await t.append(token, log_a(env), b"op-1", msg_id="mount-1.1")
    retry = await t.append(token, log_a(env), b"op-1", msg_id="mount-1.1")
    assert retry.seq == first.seq
    marker = await t.append(token, log_a(env), b"op-2", msg_id="mount-1.2")
    assert marker.seq > first.seq
    assert await t.last_seq(token, log_a(env)) == marker.seq

    sub = await t.subscribe(token, log_a(env), after_seq=0)
    got = await take(aiter(sub), 2)
    await sub.aclose()
    assert [(d.seq, d.prev_seq, d.payload) for d in got] == [
        (first.seq, 0, b"op-1"),
        (marker.seq, first.seq, b"op-2"),
    ]


async def test_append_requires_a_msg_id(transport_env: TransportEnv) -> None:
    env = transport_env
    token = env.sign({REPO: "rw"})
    with pytest.raises(ValueError, match="msg_id"):
        await env.transport.append(token, log_a(env), b"x", msg_id="")
    assert await env.transport.last_seq(token, log_a(env)) == 0


async def test_subscribe_after_a_seq_yields_exactly_the_tail(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    seqs = []
    for i in range(5):
        seqs.append((await t.append(token, log_a(env), b"a%d" % i, msg_id=f"a{i}")).seq)
        await t.append(token, log_b(env), b"b%d" % i, msg_id=f"b{i}")

    sub = await t.subscribe(token, log_a(env), after_seq=seqs[2])
    entries = aiter(sub)
    tail = await take(entries, 2)
    assert [(d.seq, d.prev_seq, d.payload) for d in tail] == [
        (seqs[3], seqs[2], b"a3"),
        (seqs[4], seqs[3], b"a4"),
    ]
    # The next delivery is a new append, not a repeat of the backlog.
    new = await t.append(token, log_a(env), b"a5", msg_id="a5")
    assert await take(entries, 1) == [expect(new, seqs[4], b"a5")]
    await sub.aclose()


async def test_subscription_delivers_live_appends(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    sub = await t.subscribe(token, log_a(env), after_seq=0)
    entries = aiter(sub)
    pending = asyncio.ensure_future(take(entries, 2))
    await asyncio.sleep(0)  # let the consumer block on an empty log
    first = await t.append(token, log_a(env), b"live-1", msg_id="l1")
    await t.append(token, log_b(env), b"elsewhere", msg_id="lb")
    second = await t.append(token, log_a(env), b"live-2", msg_id="l2")
    got = await asyncio.wait_for(pending, TIMEOUT_S)
    await sub.aclose()
    assert got == [
        expect(first, 0, b"live-1"),
        expect(second, first.seq, b"live-2"),
    ]


async def test_subscription_from_the_end_sees_only_new_entries(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    old = await t.append(token, log_a(env), b"old", msg_id="o")
    sub = await t.subscribe(token, log_a(env), after_seq=old.seq)
    new = await t.append(token, log_a(env), b"new", msg_id="n")
    got = await take(aiter(sub), 1)
    await sub.aclose()
    assert got == [expect(new, old.seq, b"new")]


async def test_subscription_ends_on_aclose(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    await t.append(token, log_a(env), b"one", msg_id="1")
    sub = await t.subscribe(token, log_a(env), after_seq=0)
    received = asyncio.Event()
    got: list[bytes] = []

    async def consume() -> None:
        async for delivery in sub:
            got.append(delivery.payload)
            received.set()

    consumer = asyncio.ensure_future(consume())
    await asyncio.wait_for(received.wait(), TIMEOUT_S)
    await sub.aclose()  # the consumer is now blocked waiting for a second entry
    await asyncio.wait_for(consumer, TIMEOUT_S)
    assert got == [b"one"]


async def test_subscription_ends_before_any_entry_on_aclose(transport_env: TransportEnv) -> None:
    env = transport_env
    sub = await env.transport.subscribe(env.sign({REPO: "ro"}), log_a(env), after_seq=0)
    consumer = asyncio.ensure_future(drain(sub))
    await asyncio.sleep(0)
    await sub.aclose()
    assert await asyncio.wait_for(consumer, TIMEOUT_S) == []


async def test_closing_the_transport_ends_subscriptions(transport_env: TransportEnv) -> None:
    env = transport_env
    sub = await env.transport.subscribe(env.sign({REPO: "ro"}), log_a(env), after_seq=0)
    consumer = asyncio.ensure_future(drain(sub))
    await asyncio.sleep(0)
    await env.transport.aclose()
    assert await asyncio.wait_for(consumer, TIMEOUT_S) == []


async def test_oversized_payload_is_refused_and_not_appended(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    with pytest.raises(PayloadTooLargeError):
        await t.append(token, log_a(env), b"x" * (t.max_payload_bytes + 1), msg_id="big")
    assert await t.last_seq(token, log_a(env)) == 0
    fits = await t.append(token, log_a(env), b"y" * t.max_payload_bytes, msg_id="fits")
    assert await t.last_seq(token, log_a(env)) == fits.seq


# -- blobs -----------------------------------------------------------------------


async def test_blob_round_trip_is_content_addressed(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw", OTHER_REPO: "rw"})
    small = b"hello, blob"
    digest = await t.put_blob(token, env.org, REPO, small)
    assert digest == hashlib.sha256(small).hexdigest()
    assert await t.put_blob(token, env.org, REPO, small) == digest
    assert await t.get_blob(token, env.org, REPO, digest) == small
    # Blobs belong to their repo: the same digest is unknown to another repo.
    with pytest.raises(MissingError):
        await t.get_blob(token, env.org, OTHER_REPO, digest)


async def test_large_blob_round_trip(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    data = os.urandom(50 * 1024 * 1024)
    digest = await t.put_blob(token, env.org, REPO, data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert await t.get_blob(token, env.org, REPO, digest) == data


async def test_get_blob_of_a_missing_digest_raises_not_found(transport_env: TransportEnv) -> None:
    env = transport_env
    token = env.sign({REPO: "ro"})
    with pytest.raises(MissingError):
        await env.transport.get_blob(token, env.org, REPO, hashlib.sha256(b"never").hexdigest())


async def read_stream(stream: BlobStream) -> list[bytes]:
    """Every piece of a blob stream, each arriving in time."""
    pieces: list[bytes] = []
    it = aiter(stream)
    while True:
        try:
            pieces.append(await asyncio.wait_for(anext(it), TIMEOUT_S))
        except StopAsyncIteration:
            return pieces


async def async_chunks(*chunks: bytes | bytearray | memoryview) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield bytes(chunk)


class Untouched:
    """An iterable that fails the test if anything takes a chunk from it."""

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("a refused put must not take any chunk")


async def test_chunked_puts_are_content_addressed_whatever_the_chunking(
    transport_env: TransportEnv,
) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    data = os.urandom(3 * BLOB_CHUNK_BYTES + 12_345) + bytes(2 * BLOB_CHUNK_BYTES)
    expected = hashlib.sha256(data).hexdigest()
    view = memoryview(data)
    cut = [view[:1], bytearray(view[1:70_000]), b"", view[70_000:]]
    assert await t.put_blob_chunks(token, env.org, REPO, cut) == expected
    assert await t.put_blob_chunks(token, env.org, REPO, [data]) == expected
    assert await t.put_blob_chunks(token, env.org, REPO, async_chunks(*cut)) == expected
    assert await t.put_blob(token, env.org, REPO, data) == expected
    assert await t.get_blob(token, env.org, REPO, expected) == data
    pieces = await read_stream(await t.get_blob_chunks(token, env.org, REPO, expected))
    assert b"".join(pieces) == data
    assert all(0 < len(piece) <= BLOB_CHUNK_BYTES for piece in pieces)
    # A blob put whole streams back the same.
    small = b"put whole"
    digest = await t.put_blob(token, env.org, REPO, bytearray(small))
    assert digest == hashlib.sha256(small).hexdigest()
    assert await read_stream(await t.get_blob_chunks(token, env.org, REPO, digest)) == [small]


async def test_an_empty_chunked_blob_round_trips(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    digest = await t.put_blob_chunks(token, env.org, REPO, [])
    assert digest == hashlib.sha256(b"").hexdigest()
    assert await t.get_blob(token, env.org, REPO, digest) == b""
    assert await read_stream(await t.get_blob_chunks(token, env.org, REPO, digest)) == []


async def test_compressible_blobs_stream_in_bounded_pieces(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    zeros = bytes(24 * BLOB_CHUNK_BYTES)  # compresses ~30,000:1 on JetStream
    digest = await t.put_blob_chunks(token, env.org, REPO, [zeros[:5], zeros[5:]])
    stream = await t.get_blob_chunks(token, env.org, REPO, digest)
    total = 0
    async for piece in stream:
        assert 0 < len(piece) <= BLOB_CHUNK_BYTES
        assert not any(piece)
        total += len(piece)
    assert total == len(zeros)


async def test_a_reader_may_stop_early(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    data = os.urandom(3 * BLOB_CHUNK_BYTES)
    digest = await t.put_blob_chunks(token, env.org, REPO, [data])
    stream = await t.get_blob_chunks(token, env.org, REPO, digest)
    first = await asyncio.wait_for(anext(aiter(stream)), TIMEOUT_S)
    assert data.startswith(first)
    await stream.aclose()
    assert (
        b"".join(await read_stream(await t.get_blob_chunks(token, env.org, REPO, digest))) == data
    )


async def test_a_failing_chunk_source_stores_nothing(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    head = os.urandom(BLOB_CHUNK_BYTES + 1)

    async def broken() -> AsyncIterator[bytes]:
        yield head
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        await t.put_blob_chunks(token, env.org, REPO, broken())
    with pytest.raises(MissingError):
        await t.get_blob_chunks(token, env.org, REPO, hashlib.sha256(head).hexdigest())
    with pytest.raises(TypeError):
        await t.put_blob_chunks(token, env.org, REPO, [b"ok", "not bytes"])  # type: ignore[list-item]


async def test_blobs_over_the_maximum_are_refused_and_store_nothing(
    transport_env: TransportEnv,
) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    assert t.max_blob_bytes == MAX_BLOB_BYTES
    t.max_blob_bytes = 2 * BLOB_CHUNK_BYTES
    exact = os.urandom(t.max_blob_bytes)
    over = exact + os.urandom(300_000)
    taken: list[int] = []

    def source() -> Iterator[bytes]:
        for start in range(0, len(over), 100_000):
            taken.append(start)
            yield over[start : start + 100_000]

    with pytest.raises(PayloadTooLargeError):
        await t.put_blob_chunks(token, env.org, REPO, source())
    # Refused at the chunk holding the byte too many, and nothing taken after it.
    assert taken[-1] == t.max_blob_bytes // 100_000 * 100_000
    with pytest.raises(PayloadTooLargeError):
        await t.put_blob(token, env.org, REPO, exact + b"!")
    for refused in (over, exact + b"!"):
        with pytest.raises(MissingError):
            await t.get_blob(token, env.org, REPO, hashlib.sha256(refused).hexdigest())
    digest = await t.put_blob_chunks(token, env.org, REPO, [exact])
    assert await t.get_blob(token, env.org, REPO, digest) == exact


async def test_a_missing_blob_is_refused_before_streaming(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw", OTHER_REPO: "rw"})
    digest = await t.put_blob_chunks(token, env.org, REPO, [b"only in main"])
    for repo, name in [(OTHER_REPO, digest), (REPO, hashlib.sha256(b"never").hexdigest())]:
        with pytest.raises(MissingError):
            await t.get_blob_chunks(token, env.org, repo, name)
    with pytest.raises(MissingError):
        await t.get_blob_chunks(token, env.org, REPO, "not-a-digest")


async def test_concurrent_chunked_puts_of_the_same_bytes_agree(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    data = os.urandom(2 * BLOB_CHUNK_BYTES + 7)
    digests = await asyncio.gather(
        *(
            t.put_blob_chunks(token, env.org, REPO, async_chunks(data[:9], data[9:]))
            for _ in range(3)
        ),
        t.put_blob(token, env.org, REPO, data),
    )
    assert set(digests) == {hashlib.sha256(data).hexdigest()}
    assert await t.get_blob(token, env.org, REPO, digests[0]) == data


# -- KV --------------------------------------------------------------------------


async def test_kv_put_get_and_compare_and_set(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    key = f"{env.org}.{REPO}.bookmarks.trunk"
    assert await t.kv_get(token, key) is None

    rev1 = await t.kv_put(token, key, b"v1")
    assert rev1 > 0
    assert await t.kv_get(token, key) == KvEntry(key, b"v1", rev1)
    rev2 = await t.kv_put(token, key, b"v2")
    assert rev2 > rev1
    rev3 = await t.kv_put(token, key, b"v3", expected_revision=rev2)
    assert rev3 > rev2
    assert await t.kv_get(token, key) == KvEntry(key, b"v3", rev3)

    with pytest.raises(RevisionMismatchError) as stale:
        await t.kv_put(token, key, b"stale", expected_revision=rev2)
    assert (stale.value.key, stale.value.expected, stale.value.actual) == (key, rev2, rev3)
    with pytest.raises(RevisionMismatchError) as exists:
        await t.kv_put(token, key, b"create", expected_revision=0)
    assert (exists.value.expected, exists.value.actual) == (0, rev3)
    assert await t.kv_get(token, key) == KvEntry(key, b"v3", rev3)


async def test_kv_create_only_when_missing(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    key = f"{env.org}.{REPO}.locks.x"
    with pytest.raises(RevisionMismatchError) as missing:
        await t.kv_put(token, key, b"v", expected_revision=7)
    assert (missing.value.expected, missing.value.actual) == (7, 0)
    assert await t.kv_get(token, key) is None
    rev = await t.kv_put(token, key, b"created", expected_revision=0)
    assert await t.kv_get(token, key) == KvEntry(key, b"created", rev)


async def test_concurrent_cas_puts_have_exactly_one_winner(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    key = f"{env.org}.{REPO}.bookmarks.race"
    base = await t.kv_put(token, key, b"base")
    results = await asyncio.gather(
        t.kv_put(token, key, b"left", expected_revision=base),
        t.kv_put(token, key, b"right", expected_revision=base),
        return_exceptions=True,
    )
    wins = [(i, r) for i, r in enumerate(results) if isinstance(r, int)]
    losses = [r for r in results if isinstance(r, RevisionMismatchError)]
    assert len(wins) == 1
    assert len(losses) == 1
    winner, revision = wins[0]
    assert revision > base
    assert (losses[0].expected, losses[0].actual) == (base, revision)
    assert await t.kv_get(token, key) == KvEntry(key, [b"left", b"right"][winner], revision)


async def test_kv_delete_with_compare_and_set(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({REPO: "rw"})
    key = f"{env.org}.{REPO}.bookmarks.gone"
    rev = await t.kv_put(token, key, b"v")
    with pytest.raises(RevisionMismatchError) as stale:
        await t.kv_delete(token, key, expected_revision=rev + 1)
    assert (stale.value.expected, stale.value.actual) == (rev + 1, rev)
    assert await t.kv_get(token, key) == KvEntry(key, b"v", rev)

    await t.kv_delete(token, key, expected_revision=rev)
    assert await t.kv_get(token, key) is None
    with pytest.raises(MissingError):
        await t.kv_delete(token, key)

    again = await t.kv_put(token, key, b"again", expected_revision=0)
    assert again > rev
    await t.kv_delete(token, key)
    assert await t.kv_get(token, key) is None


async def test_kv_keys_lists_only_readable_keys_with_the_prefix(
    transport_env: TransportEnv,
) -> None:
    env = transport_env
    t = env.transport
    root = admin(env)
    org = env.org
    keys = [f"{org}.{REPO}.b", f"{org}.{REPO}.a", f"{org}.{OTHER_REPO}.c", f"{org}.{REPO}x.d"]
    for key in keys:
        await t.kv_put(root, key, b"v")

    assert await t.kv_keys(root, f"{org}.") == sorted(keys)
    assert await t.kv_keys(root, f"{org}.{REPO}.") == [f"{org}.{REPO}.a", f"{org}.{REPO}.b"]
    assert await t.kv_keys(root, f"{org}.nothing") == []
    reader = env.sign({REPO: "ro"})
    assert await t.kv_keys(reader, f"{org}.") == [f"{org}.{REPO}.a", f"{org}.{REPO}.b"]
    with pytest.raises(PermissionDeniedError):
        await t.kv_get(reader, f"{org}.{OTHER_REPO}.c")


# -- tokens and permissions ------------------------------------------------------


async def test_expired_token_is_refused_and_writes_nothing(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    ttl_s = 1
    token = env.sign({REPO: "rw"}, ttl_s=ttl_s)
    key = f"{env.org}.{REPO}.k"
    await expire(env, ttl_s)

    with pytest.raises(TokenRejectedError):
        await t.append(token, log_a(env), b"late", msg_id="late")
    with pytest.raises(TokenRejectedError):
        await t.subscribe(token, log_a(env), after_seq=0)
    with pytest.raises(TokenRejectedError):
        await t.last_seq(token, log_a(env))
    with pytest.raises(TokenRejectedError):
        await t.put_blob(token, env.org, REPO, b"late blob")
    with pytest.raises(TokenRejectedError):
        await t.put_blob_chunks(token, env.org, REPO, Untouched())
    with pytest.raises(TokenRejectedError):
        await t.get_blob_chunks(token, env.org, REPO, hashlib.sha256(b"late blob").hexdigest())
    with pytest.raises(TokenRejectedError):
        await t.kv_put(token, key, b"late")
    with pytest.raises(TokenRejectedError):
        await t.kv_get(token, key)
    with pytest.raises(TokenRejectedError):
        await t.kv_keys(token, f"{env.org}.")

    fresh = env.sign({REPO: "rw"})
    assert await t.last_seq(fresh, log_a(env)) == 0
    with pytest.raises(MissingError):
        await t.get_blob(fresh, env.org, REPO, hashlib.sha256(b"late blob").hexdigest())
    assert await t.kv_get(fresh, key) is None


async def test_token_signed_with_an_unknown_key_is_refused(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    forged = sign(generate_key(), Claims(env.org, {"*": "rw"}, 0, 2**40, "intruder"))
    key = f"{env.org}.{REPO}.k"
    with pytest.raises(TokenRejectedError):
        await t.append(forged, log_a(env), b"forged", msg_id="f")
    with pytest.raises(TokenRejectedError):
        await t.subscribe(forged, log_a(env), after_seq=0)
    with pytest.raises(TokenRejectedError):
        await t.put_blob(forged, env.org, REPO, b"forged")
    with pytest.raises(TokenRejectedError):
        await t.put_blob_chunks(forged, env.org, REPO, Untouched())
    with pytest.raises(TokenRejectedError):
        await t.kv_put(forged, key, b"forged")
    with pytest.raises(TokenRejectedError):
        await t.kv_get("not-a-jwt", key)

    root = admin(env)
    assert await t.last_seq(root, log_a(env)) == 0
    assert await t.kv_get(root, key) is None


async def test_token_for_another_repo_is_denied(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    token = env.sign({OTHER_REPO: "rw"})
    key = f"{env.org}.{REPO}.k"
    with pytest.raises(PermissionDeniedError):
        await t.append(token, log_a(env), b"x", msg_id="x")
    with pytest.raises(PermissionDeniedError):
        await t.subscribe(token, log_a(env), after_seq=0)
    with pytest.raises(PermissionDeniedError):
        await t.last_seq(token, log_a(env))
    with pytest.raises(PermissionDeniedError):
        await t.put_blob(token, env.org, REPO, b"x")
    with pytest.raises(PermissionDeniedError):
        await t.get_blob(token, env.org, REPO, hashlib.sha256(b"x").hexdigest())
    with pytest.raises(PermissionDeniedError):
        await t.put_blob_chunks(token, env.org, REPO, Untouched())
    with pytest.raises(PermissionDeniedError):
        await t.get_blob_chunks(token, env.org, REPO, hashlib.sha256(b"x").hexdigest())
    with pytest.raises(PermissionDeniedError):
        await t.kv_put(token, key, b"x")
    with pytest.raises(PermissionDeniedError):
        await t.kv_get(token, key)
    # A grant of every repo of one org does not reach another org.
    with pytest.raises(PermissionDeniedError):
        await t.put_blob(admin(env), "globex", REPO, b"x")

    root = admin(env)
    assert await t.last_seq(root, log_a(env)) == 0
    with pytest.raises(MissingError):
        await t.get_blob(root, env.org, REPO, hashlib.sha256(b"x").hexdigest())
    assert await t.kv_get(root, key) is None


async def test_read_only_grant_reads_but_cannot_write(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    root = admin(env)
    key = f"{env.org}.{REPO}.k"
    entry = await t.append(root, log_a(env), b"by-root", msg_id="r1")
    digest = await t.put_blob(root, env.org, REPO, b"root blob")
    rev = await t.kv_put(root, key, b"root value")

    reader = env.sign({REPO: "ro"})
    assert await t.last_seq(reader, log_a(env)) == entry.seq
    sub = await t.subscribe(reader, log_a(env), after_seq=0)
    assert await take(aiter(sub), 1) == [expect(entry, 0, b"by-root")]
    await sub.aclose()
    assert await t.get_blob(reader, env.org, REPO, digest) == b"root blob"
    stream = await t.get_blob_chunks(reader, env.org, REPO, digest)
    assert await read_stream(stream) == [b"root blob"]
    assert await t.kv_get(reader, key) == KvEntry(key, b"root value", rev)

    with pytest.raises(PermissionDeniedError):
        await t.append(reader, log_a(env), b"by-reader", msg_id="w1")
    with pytest.raises(PermissionDeniedError):
        await t.put_blob(reader, env.org, REPO, b"reader blob")
    with pytest.raises(PermissionDeniedError):
        await t.put_blob_chunks(reader, env.org, REPO, Untouched())
    with pytest.raises(PermissionDeniedError):
        await t.kv_put(reader, key, b"reader value")
    with pytest.raises(PermissionDeniedError):
        await t.kv_delete(reader, key)

    assert await t.last_seq(root, log_a(env)) == entry.seq
    with pytest.raises(MissingError):
        await t.get_blob(root, env.org, REPO, hashlib.sha256(b"reader blob").hexdigest())
    assert await t.kv_get(root, key) == KvEntry(key, b"root value", rev)


# -- names -----------------------------------------------------------------------


def test_invalid_log_names_are_refused() -> None:
    with pytest.raises(InvalidNameError):
        LogId("Acme!", REPO, CHANGE_A)
    with pytest.raises(InvalidNameError):
        LogId("acme", "bad repo", CHANGE_A)
    with pytest.raises(InvalidNameError) as change:
        LogId("acme", REPO, "abc")
    assert isinstance(change.value, ValueError)


async def test_invalid_names_are_refused_by_blob_and_kv_calls(transport_env: TransportEnv) -> None:
    env = transport_env
    t = env.transport
    root = admin(env)
    with pytest.raises(InvalidNameError):
        await t.put_blob(root, "Acme!", REPO, b"x")
    with pytest.raises(InvalidNameError):
        await t.get_blob(root, env.org, "bad repo", hashlib.sha256(b"x").hexdigest())
    with pytest.raises(InvalidNameError):
        await t.put_blob_chunks(root, "Acme!", REPO, Untouched())
    with pytest.raises(InvalidNameError):
        await t.get_blob_chunks(root, env.org, "bad repo", hashlib.sha256(b"x").hexdigest())
    for key in ["Acme!.main.k", f"{env.org}.{REPO}.bad key", f"{env.org}", f"{env.org}..k", ""]:
        with pytest.raises(InvalidNameError):
            await t.kv_put(root, key, b"x")
    with pytest.raises(ValueError, match="invalid"):
        await t.kv_get(root, f"{env.org}.{REPO}.")
    assert await t.kv_keys(root, "") == []

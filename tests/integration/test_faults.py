"""Bad input and faults against real nats-servers (issue 3, item 6).

- A server that cannot be reached (closed port, a listener that never speaks NATS, no
  JetStream, or one that dies under an established mount) gives
  `mesa.errors.MesaConnectionError`, a `ConnectionError`, within a bounded time.
- An entry that does not decode, published straight onto a change's subject, gives
  `LogCorruptError` naming the change and the sequence; the fold stops there, and a
  fresh mount fails the same way.
- Contents far beyond the server's ``max_payload`` are written and read back
  byte-identical on another mount; names too long for one entry are
  ``OSError(ENAMETOOLONG)``; nothing ever surfaces as ``nats.errors.MaxPayloadError``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from engine.codec import encode_entry
from engine.content import Content
from engine.ops import Entry, Write
from mesa import LogCorruptError, Mesa, MesaConnectionError
from tests.integration.conftest import Deployment, SpawnMount
from tests.integration.mountproc import random_bytes, sha256
from tests.integration.natsutil import NatsServer, free_port, start_nats
from transports.base import LogId
from transports.jetstream import log_subject

pytestmark = pytest.mark.integration

#: "Never a hang": generous for slow CI machines, far below any test timeout.
CONNECT_BOUND_S = 15.0
#: A write on a mount whose server died: the append retries for 10 s, then one more
#: request may time out (5 s).
WRITE_BOUND_S = 20.0


@pytest.fixture
def deployment_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point this process's clients at ``urls`` (``MESA_NATS_URL``) with a fresh key."""

    def point(urls: list[str]) -> Deployment:
        deployment = Deployment(urls)
        for key, value in deployment.env().items():
            if key.startswith("MESA_"):
                monkeypatch.setenv(key, value)
        return deployment

    return point


async def _mount_error(url: str, point: Any) -> tuple[BaseException, float]:
    deployment = point([url])
    mesa = Mesa(org="acme", api_key=deployment.api_key)
    started = time.monotonic()
    with pytest.raises(MesaConnectionError) as info:
        async with mesa.fs.mount(repos=["app"]):
            pass
    return info.value, time.monotonic() - started


async def test_closed_port_is_a_connection_error_in_bounded_time(deployment_env: Any) -> None:
    exc, elapsed = await _mount_error(f"nats://127.0.0.1:{free_port()}", deployment_env)
    assert isinstance(exc, ConnectionError)
    assert "cannot reach" in str(exc)
    assert "refused" in str(exc).lower()
    assert elapsed < CONNECT_BOUND_S


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_silent_listener_is_a_connection_error_in_bounded_time(
    deployment_env: Any, silent_listener: int
) -> None:
    exc, elapsed = await _mount_error(f"nats://127.0.0.1:{silent_listener}", deployment_env)
    assert "cannot reach" in str(exc)
    assert elapsed < CONNECT_BOUND_S


async def test_server_without_jetstream_is_a_clear_connection_error(
    tmp_path: Path, deployment_env: Any
) -> None:
    server = start_nats(tmp_path, jetstream=False)
    try:
        exc, elapsed = await _mount_error(server.url, deployment_env)
    finally:
        server.kill()
    assert "JetStream is not enabled" in str(exc)
    assert elapsed < CONNECT_BOUND_S


async def test_server_dying_under_a_mount_gives_connection_errors_not_hangs(
    nats_server: NatsServer, deployment_env: Any
) -> None:
    """The folded tree stays readable; calls that need the server fail in bounded time."""
    deployment = deployment_env([nats_server.url])
    mesa = Mesa(org="acme", api_key=deployment.api_key)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/kept.txt", b"kept\n")
        await asyncio.to_thread(nats_server.kill)
        assert await fs.read("/acme/app/kept.txt") == b"kept\n"
        for what, call in (
            ("write", fs.write("/acme/app/lost.txt", b"x")),
            ("blob write", fs.write("/acme/app/big.bin", b"y" * 200_000)),
            ("wait_synced", fs.wait_synced()),
        ):
            started = time.monotonic()
            with pytest.raises(MesaConnectionError):
                await asyncio.wait_for(call, WRITE_BOUND_S + 5)
            elapsed = time.monotonic() - started
            assert elapsed < WRITE_BOUND_S, f"{what} took {elapsed:.1f}s"


@pytest.fixture
async def raw_js(nats_server: NatsServer) -> AsyncIterator[Any]:
    """A bare nats-py JetStream context on the server (bypassing mesa entirely)."""
    nc = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream(timeout=5)
    finally:
        await nc.close()


async def test_undecodable_entry_names_change_and_sequence_and_stops_the_fold(
    nats_server: NatsServer, deployment_env: Any, raw_js: Any, spawn_mount: SpawnMount
) -> None:
    deployment = deployment_env([nats_server.url])
    mesa = Mesa(org="acme", api_key=deployment.api_key)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/before.txt", b"before\n")
        repo = fs._repos["app"]
        change = repo.change_id
        subject = log_subject(LogId("acme", "app", change))
        bad = await raw_js.publish(subject, b"\x00 this is not an entry \xff")
        # A well-formed entry after the bad one: it must not be folded.
        entry = Entry(
            op=Write(("after.txt",), Content.of(b"after\n")),
            author="mintruder",
            counter=1,
            seen=bad.seq,
        )
        await raw_js.publish(subject, encode_entry(entry), headers={"Nats-Msg-Id": entry.op_id})

        deadline = time.monotonic() + 10
        while repo.broken is None:
            assert time.monotonic() < deadline, "the mount never reported the bad entry"
            await asyncio.sleep(0.02)
        for call in (
            fs.read("/acme/app/before.txt"),
            fs.write("/acme/app/new.txt", b"x"),
            fs.readdir("/acme/app"),
            fs.wait_synced(),
        ):
            with pytest.raises(LogCorruptError) as info:
                await call
            assert info.value.change == change
            assert info.value.seq == bad.seq
            assert change in str(info.value)
            assert f"sequence {bad.seq}" in str(info.value)
        # The fold stopped right before the bad entry: nothing after it was applied.
        assert repo.replica.seq == bad.seq - 1
        tree = repo.replica.state.tree
        assert tree.lookup(("before.txt",)) is not None
        assert tree.lookup(("after.txt",)) is None
        assert tree.lookup(("new.txt",)) is None

    # A fresh mount, in this process and in another one, fails the same way.
    with pytest.raises(LogCorruptError) as fresh:
        async with Mesa(org="acme", api_key=deployment.api_key).fs.mount(repos=["app"]):
            pass
    assert (fresh.value.change, fresh.value.seq) == (change, bad.seq)
    child = await spawn_mount("fresh", deployment, wait=False)
    failed = await child.wait_for(
        lambda ms: next((m for m in ms if m.get("type") == "mount-failed"), None), 30, "failure"
    )
    assert failed["error"] == "LogCorruptError"
    assert change in failed["message"]
    assert f"sequence {bad.seq}" in failed["message"]


@pytest.fixture(params=[None, 32 * 1024], ids=["max_payload-1MiB", "max_payload-32KiB"])
def payload_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServer]:
    """A server with the default ``max_payload`` (1 MiB) or one below the inline threshold."""
    server = start_nats(tmp_path, max_payload=request.param)
    try:
        yield server
    finally:
        server.kill()


async def test_oversized_payloads_never_surface_as_max_payload_errors(
    payload_server: NatsServer, spawn_mount: SpawnMount
) -> None:
    deployment = Deployment([payload_server.url])
    writer = await spawn_mount("writer", deployment, create=True)
    reader = await spawn_mount("reader", deployment)
    limit = payload_server.max_payload or 1024 * 1024
    sizes = [40_000, 3 * 1024 * 1024, 50 * 1024 * 1024]
    written: dict[str, str] = {}
    for seed, size in enumerate(sizes):
        assert size > limit or limit > 64 * 1024  # beyond max_payload, or inline
        path = f"data-{size}.bin"
        reply = await writer.call("write_random", 120, path=path, size=size, seed=seed)
        assert reply["sha256"] == sha256(random_bytes(size, seed))
        written[path] = reply["sha256"]
    # Names too long for one entry: a clean ENAMETOOLONG, and the mount keeps working.
    huge_target = "t" * (2 * limit)
    deep = "/".join(["d" * 200] * (2 * limit // 200))
    for cmd, args in (
        ("symlink", {"target": huge_target, "path": "link"}),
        ("mkdir", {"path": deep}),
    ):
        reply = await writer.call(cmd, check=False, **args)
        assert not reply["ok"]
        assert "OSError" in reply["mro"], reply
        assert reply["errno"] == errno.ENAMETOOLONG, reply
    await writer.call("symlink", target="data-40000.bin", path="short-link")

    dump = await reader.dump(120)
    for path, digest in written.items():
        assert dump["tree"][path]["sha256"] == digest
    assert dump["tree"]["short-link"] == {"kind": "link", "target": "data-40000.bin"}
    assert "link" not in dump["tree"]
    assert set(dump["tree"]) == {*written, "short-link"}
    for child in (writer, reader):
        assert "MaxPayload" not in child.stderr_tail(200_000)
        assert not any("MaxPayload" in str(m) for m in child.messages)

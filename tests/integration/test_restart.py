"""A restart of the embedded server strands no mount and no SDK client (issue 12, bug 4).

- The embedded server keeps its client address across restarts of a ``MESA_HOME``; a
  port taken by something else at restart is a clear `MesaConnectionError` naming the
  port and the home, never a silent move to another port.
- A mount in its own process (the public SDK on the embedded default, like a user's
  long-running client) keeps working across ``stop`` + ``start``: its next writes
  succeed, a second mount sees every write exactly once and in order, and the first
  mount's subscription delivers what the second wrote after the restart.
- A write made while the server is down lands exactly once when it comes back in time;
  a write the server stays away from longer than the retry budget raises
  `MesaConnectionError` and is never stored afterwards (nothing sent while
  disconnected is replayed by the client later).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from engine.codec import decode_entry
from engine.ops import Write
from mesa import MesaConnectionError, server
from tests.integration.conftest import ROOT, Deployment, MountProcess, SpawnMount
from transports.base import LogId
from transports.jetstream import log_subject, stream_name

pytestmark = pytest.mark.integration

ORG = "acme"
REPO = "app"
#: A write on a mount whose server is gone: about 10 s of retries, then one more
#: request may wait for the connection (5 s); generous for slow machines.
WRITE_BOUND_S = 25.0
EVENT_TIMEOUT_S = 20.0


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "mesa-home"
    try:
        yield home
    finally:
        server.stop(home)


@dataclass
class EmbeddedHome(Deployment):
    """Child mounts that use the embedded default of ``home`` (no ``MESA_NATS_URL``)."""

    home: Path = field(default_factory=Path)

    def register_key(self) -> None:
        """Nothing: the embedded default knows its admin key."""

    def env(self, urls: list[str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESA_")}
        env.update(
            MESA_HOME=str(self.home),
            MESA_API_KEY=self.api_key,
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        return env


async def _start(home: Path) -> server.ServerInfo:
    return await asyncio.to_thread(server.ensure_running, home)


async def _stop(home: Path) -> None:
    assert await asyncio.to_thread(server.stop, home)
    assert server.status(home) is None


@pytest.fixture
async def embedded(home: Path) -> tuple[server.ServerInfo, EmbeddedHome]:
    """The embedded server of ``home`` (stopped by ``home``) and mounts that use it."""
    info = await _start(home)
    return info, EmbeddedHome([info.url], api_key=info.admin_key, home=home)


async def _log_writes(info: server.ServerInfo, change_id: str) -> list[str]:
    """Return the path of every ``Write`` in the change's log, in log order (raw NATS)."""
    nc = await nats.connect(info.authenticated_url)
    try:
        js = nc.jetstream(timeout=5)
        stream = stream_name(ORG, REPO)
        subject = log_subject(LogId(ORG, REPO, change_id))
        last = (await js.stream_info(stream)).state.last_seq
        paths: list[str] = []
        for seq in range(1, last + 1):
            msg = await js.get_msg(stream, seq)
            if msg.subject != subject:
                continue
            assert msg.data is not None
            op = decode_entry(msg.data).op
            if isinstance(op, Write):
                paths.append("/".join(op.path))
        return paths
    finally:
        await nc.close()


def _events(child: MountProcess, path: str) -> list[dict[str, Any]]:
    return [m for m in child.of_type("event") if m["path"] == f"/{ORG}/{REPO}/{path}"]


# -- the address ---------------------------------------------------------------------


def test_a_restart_keeps_the_address(home: Path) -> None:
    first = server.ensure_running(home)
    assert server.stop(home)
    second = server.ensure_running(home)
    assert second.pid != first.pid
    assert second.url == first.url
    # A crash (no stop) keeps it too.
    os.kill(second.pid, 9)
    third = server.ensure_running(home)
    assert third.url == first.url


def test_a_port_taken_at_restart_is_a_clear_error(home: Path) -> None:
    first = server.ensure_running(home)
    port = int(first.url.rsplit(":", 1)[1])
    assert server.stop(home)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        with pytest.raises(MesaConnectionError) as info:
            server.ensure_running(home)
        message = str(info.value)
        assert str(port) in message
        assert str(home) in message
        assert server.status(home) is None
    # Once the port is free again, the home comes back where it was.
    assert server.ensure_running(home).url == first.url


# -- live mounts ---------------------------------------------------------------------


async def test_a_mount_keeps_working_across_a_restart(
    home: Path, embedded: tuple[server.ServerInfo, EmbeddedHome], spawn_mount: SpawnMount
) -> None:
    info, deployment = embedded
    a = await spawn_mount("A", deployment, create=True)
    await a.call("subscribe")
    for i in range(3):
        await a.write(f"before-{i}.txt", b"before %d\n" % i)

    await _stop(home)
    restarted = await _start(home)
    assert restarted.url == info.url

    # The long-running client's next writes succeed (no restart of the process).
    for i in range(3):
        await a.write(f"after-{i}.txt", b"after %d\n" % i)
    # A second mount (a fresh process) writes; the first one's subscription sees it.
    b = await spawn_mount("B", deployment)
    for i in range(3):
        await b.write(f"from-b-{i}.txt", b"from b %d\n" % i)
    for i in range(3):
        path = f"from-b-{i}.txt"
        events = await a.wait_for(
            lambda m, p=path: _events(a, p), EVENT_TIMEOUT_S, f"A's event for {path}"
        )
        assert len(events) == 1, events
        assert base64.b64decode(events[0]["data"]) == b"from b %d\n" % i
        assert await a.read(path) == b"from b %d\n" % i
    for i in range(3):
        assert await b.read(f"before-{i}.txt") == b"before %d\n" % i
        assert await b.read(f"after-{i}.txt") == b"after %d\n" % i

    expected = (
        [f"before-{i}.txt" for i in range(3)]
        + [f"after-{i}.txt" for i in range(3)]
        + [f"from-b-{i}.txt" for i in range(3)]
    )
    assert await _log_writes(restarted, a.mounted["change_id"]) == expected
    dump_a, dump_b = await asyncio.gather(a.dump(), b.dump())
    assert dump_a["hash"] == dump_b["hash"]
    assert dump_a["seq"] == dump_b["seq"]
    assert sorted(dump_a["tree"]) == sorted(expected)


async def test_a_write_made_while_the_server_is_down_lands_once(
    home: Path, embedded: tuple[server.ServerInfo, EmbeddedHome], spawn_mount: SpawnMount
) -> None:
    info, deployment = embedded
    a = await spawn_mount("A", deployment, create=True)
    await a.write("first.txt", b"first\n")
    await _stop(home)
    write = asyncio.create_task(
        a.call("write", path="during.txt", data=base64.b64encode(b"during\n").decode())
    )
    await asyncio.sleep(1.5)
    assert not write.done(), "the write returned while the server was down"
    await _start(home)
    await asyncio.wait_for(write, WRITE_BOUND_S)
    await a.write("next.txt", b"next\n")
    assert await _log_writes(info, a.mounted["change_id"]) == [
        "first.txt",
        "during.txt",
        "next.txt",
    ]
    b = await spawn_mount("B", deployment)
    assert await b.read("during.txt") == b"during\n"


async def test_a_write_outlasting_the_retry_budget_fails_and_never_lands(
    home: Path, embedded: tuple[server.ServerInfo, EmbeddedHome], spawn_mount: SpawnMount
) -> None:
    """The write raises `MesaConnectionError` in bounded time and is not stored later.

    Nothing is sent while the client is disconnected, and nothing queued then is
    replayed after the reconnect: the failed write is not in the log, on any mount.
    """
    info, deployment = embedded
    a = await spawn_mount("A", deployment, create=True)
    await a.write("first.txt", b"first\n")
    await _stop(home)
    started = time.monotonic()
    reply = await a.call(
        "write",
        WRITE_BOUND_S + 10,
        check=False,
        path="lost.txt",
        data=base64.b64encode(b"lost\n").decode(),
    )
    elapsed = time.monotonic() - started
    assert not reply["ok"], reply
    assert "MesaConnectionError" in reply["mro"], reply
    assert elapsed < WRITE_BOUND_S, f"the write took {elapsed:.1f}s to fail"

    await _start(home)
    await a.write("after.txt", b"after\n")
    await a.call("sync")
    assert await _log_writes(info, a.mounted["change_id"]) == ["first.txt", "after.txt"]
    failed = await a.call("read", check=False, path="lost.txt")
    assert not failed["ok"], failed
    assert failed["error"] == "FileNotFoundError", failed
    b = await spawn_mount("B", deployment)
    assert sorted((await b.dump())["tree"]) == ["after.txt", "first.txt"]
    with contextlib.suppress(Exception):
        await a.call("exit", 5)

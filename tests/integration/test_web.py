"""``mesa web`` against a real deployment: nats-server behind the auth callout, the service,
a ``mesa web`` process and an agent in a process of its own (``mountproc``)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

import httpx
import pytest

from mesa import Mesa
from tests.integration.conftest import ROOT, SpawnMount
from tests.integration.secured import SecuredDeployment
from tests.integration.webutil import SseReader, free_port, web_process

pytest.importorskip("websockets", reason="mesa web needs the web extra")
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.integration
pytest.importorskip("pycrdt.websocket", reason="mesa web needs the web extra")


def position(sse_id: str) -> int:
    """The event number of an SSE id (``<epoch>-<n>``)."""
    return int(sse_id.rpartition("-")[2])


def rel(path: str) -> str:
    """A path of repo acme/app as the agent process takes it (relative to the repo)."""
    return path.removeprefix("/acme/app/")


async def test_sse_streams_an_agents_writes_in_order_and_the_file_api_reads_them(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    async with web_process(secured, "app") as web, httpx.AsyncClient(base_url=web.url) as http:
        repos = (await http.get("/api/repos")).json()
        assert [r["name"] for r in repos["repos"]] == ["app"]
        assert repos["repos"][0]["change_id"] == agent.mounted["change_id"]
        sse = SseReader(http, "/api/events?repo=app", {})
        try:
            await sse.wait_for(lambda evs: any(k == "connected" for k, _, _ in evs))
            names = [f"/acme/app/f{i}.txt" for i in range(5)]
            for i, path in enumerate(names):
                await agent.write(rel(path), f"agent wrote {i}\n".encode())
            await sse.wait_for(lambda evs: set(names) <= set(sse.paths()))
            seen = [p for p in sse.paths() if p in names]
            assert seen == names  # in the log's order, each once
            ids = [position(i) for k, i, _ in sse.events if k == "file-change" and i is not None]
            assert ids == sorted(ids)
            assert len(set(ids)) == len(ids)
            got = (await http.get("/api/file", params={"path": names[3]})).json()
            assert got["text"] == "agent wrote 3\n"
            assert not got["binary"]
            assert not got["conflict"]
            tree = (await http.get("/api/tree", params={"repo": "app"})).json()
            assert [e["path"] for e in tree["entries"]] == names
            # The page writes; the agent's mount reads the bytes.
            put = await http.put("/api/file", params={"path": names[0]}, content=b"human\n")
            assert put.status_code == 200
            await agent.call("sync")
            assert await agent.read(rel(names[0])) == b"human\n"
            # Binary bytes come back flagged, not decoded.
            await agent.write("blob.bin", b"\x00\xff\x01")
            await sse.wait_for(lambda evs: "/acme/app/blob.bin" in sse.paths())
            blob = (await http.get("/api/file", params={"path": "/acme/app/blob.bin"})).json()
            assert blob["binary"]
            assert blob["text"] is None
            assert blob["size"] == 3
        finally:
            await sse.close()


async def test_a_reconnecting_stream_with_last_event_id_loses_no_event(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    async with web_process(secured, "app") as web, httpx.AsyncClient(base_url=web.url) as http:
        first = SseReader(http, "/api/events?repo=app", {})
        await first.wait_for(lambda evs: any(k == "connected" for k, _, _ in evs))
        await agent.write("before.txt", b"1")
        await first.wait_for(lambda evs: "/acme/app/before.txt" in first.paths())
        last_id = [i for k, i, _ in first.events if k == "file-change"][-1]
        await first.close()
        # Written while no stream is open.
        missed = [f"/acme/app/missed{i}.txt" for i in range(4)]
        for path in missed:
            await agent.write(rel(path), b"x")
        await agent.call("sync")
        assert last_id is not None
        again = SseReader(http, "/api/events?repo=app", {"Last-Event-ID": last_id})
        try:
            await again.wait_for(lambda evs: set(missed) <= set(again.paths()))
            assert [p for p in again.paths() if p in missed] == missed
            assert "/acme/app/before.txt" not in again.paths()  # nothing twice
            ids = [position(i) for k, i, _ in again.events if k == "file-change" and i]
            assert ids[0] == position(last_id) + 1
        finally:
            await again.close()


async def test_a_stream_that_reconnects_after_its_events_were_dropped_gets_a_snapshot(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    kept = ("--events-kept", "3")
    async with (
        web_process(secured, "app", extra=kept) as web,
        httpx.AsyncClient(base_url=web.url) as http,
    ):
        first = SseReader(http, "/api/events?repo=app", {})
        await first.wait_for(lambda evs: any(k == "connected" for k, _, _ in evs))
        await agent.write("seen.txt", b"1")
        await first.wait_for(lambda evs: "/acme/app/seen.txt" in first.paths())
        last_id = [i for k, i, _ in first.events if k == "file-change"][-1]
        await first.close()
        for i in range(5):  # more than the server keeps
            await agent.write(f"dropped{i}.txt", b"x")
        await agent.call("sync")
        assert last_id is not None
        again = SseReader(http, "/api/events?repo=app", {"Last-Event-ID": last_id})
        try:
            await again.wait_for(lambda evs: any(k == "snapshot" for k, _, _ in evs))
            kinds = [k for k, _, _ in again.events]
            assert kinds[:2] == ["connected", "snapshot"]
            assert again.paths() == []  # nothing replayed partially after a gap
            # The stream goes on live after the snapshot.
            await agent.write("after.txt", b"y")
            await again.wait_for(lambda evs: "/acme/app/after.txt" in again.paths())
        finally:
            await again.close()


async def test_after_a_server_restart_an_old_last_event_id_gets_a_snapshot_not_silence(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    for i in range(3):
        await agent.write(f"old{i}.txt", b"x")
    port = free_port()
    async with (
        web_process(secured, "app", port=port) as web,
        httpx.AsyncClient(base_url=web.url) as http,
    ):
        first = SseReader(http, "/api/events?repo=app", {})
        await first.wait_for(lambda evs: any(k == "connected" for k, _, _ in evs))
        for i in range(3):
            await agent.write(f"seen{i}.txt", b"x")
        await first.wait_for(lambda evs: "/acme/app/seen2.txt" in first.paths())
        last_id = [i for k, i, _ in first.events if k == "file-change"][-1]
        await first.close()
    assert last_id is not None
    async with (
        web_process(secured, "app", port=port) as web,
        httpx.AsyncClient(base_url=web.url) as http,
    ):
        again = SseReader(http, "/api/events?repo=app", {"Last-Event-ID": last_id})
        try:
            await again.wait_for(lambda evs: len(evs) >= 2)
            assert [k for k, _, _ in again.events][:2] == ["connected", "snapshot"]
            # Numbered anew, the next event still arrives (not filtered as "already seen").
            await agent.write("new.txt", b"y")
            await again.wait_for(lambda evs: "/acme/app/new.txt" in again.paths())
        finally:
            await again.close()


async def test_off_loopback_every_request_needs_a_token_and_a_token_for_a_cannot_open_b(
    secured: SecuredDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    admin = Mesa(org="acme", api_key=secured.api_key)
    try:
        for name in ("a", "b"):
            await admin.repos.create(name)
        async with admin.fs.mount(repos=["b"]) as fs:
            await fs.write("/acme/b/secret.txt", b"b's secret\n")
        token_a = admin.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=600).token
    finally:
        await admin.transport.aclose()
    async with web_process(secured, "a", "b", host="0.0.0.0") as web:
        async with httpx.AsyncClient(base_url=web.url) as anonymous:
            for url in ("/api/repos", "/api/tree?repo=a", "/api/events?repo=a"):
                assert (await anonymous.get(url)).status_code == 401, url
            secret = await anonymous.get("/api/file", params={"path": "/acme/b/secret.txt"})
            assert secret.status_code == 401
            assert b"secret" not in secret.content
        bearer = {"Authorization": f"Bearer {token_a}"}
        async with httpx.AsyncClient(base_url=web.url, headers=bearer) as http:
            repos = (await http.get("/api/repos")).json()
            assert [r["name"] for r in repos["repos"]] == ["a"]
            assert (await http.get("/api/tree", params={"repo": "b"})).status_code == 403
            secret = await http.get("/api/file", params={"path": "/acme/b/secret.txt"})
            assert secret.status_code == 403
            assert b"secret" not in secret.content
            assert (await http.get("/api/events", params={"repo": "b"})).status_code == 403
            # Its own repo works, through a mount made with the token.
            put = await http.put("/api/file", params={"path": "/acme/a/x.txt"}, content=b"x\n")
            assert put.status_code == 200
            assert (await http.get("/api/file", params={"path": "/acme/a/x.txt"})).json()[
                "text"
            ] == "x\n"
            change = await http.get("/api/change-diff", params={"repo": "a"})
            assert change.status_code == 200
            assert "+x" in change.text
            assert (await http.get("/api/change-diff", params={"repo": "b"})).status_code == 403
        # ?token= once: the page moves it into a cookie.
        async with httpx.AsyncClient(base_url=web.url) as browser:
            first = await browser.get("/", params={"token": token_a})
            assert first.status_code == 303
            assert "token" not in first.headers["location"]
            assert (await browser.get("/api/repos")).json()["repos"][0]["name"] == "a"


async def test_history_lists_a_files_entries_and_diffs_any_two_versions_and_the_change(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    for version in (b"one\n", b"one\ntwo\n", b"one\nthree\n"):
        await agent.write("h.txt", version)
    await agent.write("other.txt", b"elsewhere\n")
    await agent.call("sync")
    async with web_process(secured, "app") as web, httpx.AsyncClient(base_url=web.url) as http:
        history = (await http.get("/api/history", params={"path": "/acme/app/h.txt"})).json()
        entries = history["entries"]
        assert [e["op"] for e in entries] == ["write", "write", "write"]
        seqs = [e["seq"] for e in entries]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 3
        assert {e["author"] for e in entries} == {agent.mounted["mount_id"]}

        async def diff(**params: int) -> str:
            query = {"path": "/acme/app/h.txt", **{k: str(v) for k, v in params.items()}}
            response = await http.get("/api/diff", params=query)
            assert response.status_code == 200
            return response.text

        first_to_last = await diff(a=seqs[0], b=seqs[2])
        assert "+three\n" in first_to_last
        assert "-two\n" not in first_to_last  # version 1 had no "two"
        assert f"/acme/app/h.txt@{seqs[0]}" in first_to_last
        middle = await diff(a=seqs[1], b=seqs[2])
        assert "-two\n" in middle
        assert "+three\n" in middle
        assert await diff(a=seqs[2]) == ""  # the last version is now
        from_base = await diff()
        assert "+one\n" in from_base
        assert "+three\n" in from_base
        change = await http.get("/api/change-diff", params={"repo": "app"})
        assert change.status_code == 200
        assert "h.txt" in change.text
        assert "+elsewhere" in change.text


async def test_mesa_demo_web_serves_the_page_beside_a_scripted_agent_and_cleans_up(
    secured: SecuredDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesa",
        "demo",
        "--web",
        "--org",
        "acme",
        "--port",
        str(port),
        cwd=ROOT,
        env=secured.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = bytearray()
    assert proc.stdout is not None
    try:
        while b"serving http" not in output:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, output.decode()
            output.extend(line)
        assert f"open http://127.0.0.1:{port}/?open=/acme/demo-web-".encode() in output
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            repos = (await http.get("/api/repos")).json()["repos"]
            assert len(repos) == 1
            notes = f"{repos[0]['root']}/notes.md"
            deadline = time.monotonic() + 30
            while True:
                got = await http.get("/api/file", params={"path": notes})
                if got.status_code == 200 and "- agent step 2\n" in got.json()["text"]:
                    break
                assert time.monotonic() < deadline, got.text
                await asyncio.sleep(0.2)
            assert (await http.get("/")).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        output.extend(rest)
        await asyncio.wait_for(proc.wait(), 30)
    assert b"deleted repo acme/demo-web-" in output, output.decode()
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    admin = Mesa(org="acme", api_key=secured.api_key)
    try:
        assert [r.name for r in await admin.repos.list()] == []
    finally:
        await admin.transport.aclose()


async def test_removing_a_directory_streams_a_recursive_event_and_the_tree_follows(
    secured: SecuredDeployment, spawn_mount: SpawnMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    await spawn_mount("creator", secured, create=True)
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    agent = Mesa(org="acme", api_key=secured.api_key)
    try:
        async with agent.fs.mount(repos=["app"]) as fs:
            await fs.mkdir("/acme/app/src/deep", recursive=True)
            await fs.write("/acme/app/src/deep/a.py", b"a")
            await fs.write("/acme/app/keep.txt", b"k")
            async with (
                web_process(secured, "app") as web,
                httpx.AsyncClient(base_url=web.url) as http,
            ):
                sse = SseReader(http, "/api/events?repo=app", {})
                try:
                    await sse.wait_for(lambda evs: any(k == "connected" for k, _, _ in evs))
                    await fs.rm("/acme/app/src", recursive=True)

                    def recursive(evs: list[tuple[str, str | None, dict[str, Any]]]) -> bool:
                        return any(
                            d.get("path") == "/acme/app/src" and d.get("recursive")
                            for k, _, d in evs
                            if k == "file-change"
                        )

                    await sse.wait_for(recursive)
                    tree = (await http.get("/api/tree", params={"repo": "app"})).json()
                    assert [e["path"] for e in tree["entries"]] == ["/acme/app/keep.txt"]
                finally:
                    await sse.close()
    finally:
        await agent.transport.aclose()


async def _messages_until_closed(ws: Any, timeout_s: float) -> None:
    """Read a websocket's messages until it closes (raises `ConnectionClosed` then)."""
    while True:
        await asyncio.wait_for(ws.recv(), timeout_s)


async def test_off_loopback_an_expired_token_neither_writes_nor_reads(
    secured: SecuredDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    admin = Mesa(org="acme", api_key=secured.api_key)
    try:
        await admin.repos.create("a")
        async with web_process(secured, "a", host="0.0.0.0") as web:
            ttl_s = 6  # long enough to mount and write on a loaded machine
            token = admin.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=ttl_s)
            expires = time.monotonic() + ttl_s
            bearer = {"Authorization": f"Bearer {token.token}"}
            async with httpx.AsyncClient(base_url=web.url, headers=bearer) as http:
                put = await http.put("/api/file", params={"path": "/acme/a/t.txt"}, content=b"1")
                assert put.status_code == 200
                # A stream and a co-editing room opened with the token end when it does.
                sse = SseReader(http, "/api/events?repo=a", bearer)
                ws_url = web.url.replace("http://", "ws://") + "/yjs/acme/a/t.txt"
                async with connect(ws_url, origin=web.url, additional_headers=bearer) as ws:
                    assert isinstance(await asyncio.wait_for(ws.recv(), 10), bytes)
                    await sse.wait_for(lambda events: any(k == "connected" for k, _, _ in events))
                    with pytest.raises(ConnectionClosed) as closed:
                        await _messages_until_closed(ws, ttl_s + 10)
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 4401
                assert time.monotonic() >= expires - 1
                await sse.wait_for(lambda events: any(k == "expired" for k, _, _ in events))
                await sse.ended(10)
                await asyncio.sleep(max(0.0, expires - time.monotonic() + 1))
                put = await http.put("/api/file", params={"path": "/acme/a/t.txt"}, content=b"2")
                assert put.status_code == 401, put.text
                # Nor is anything read from what its mount had folded.
                got = await http.get("/api/file", params={"path": "/acme/a/t.txt"})
                assert got.status_code == 401
                assert (await http.get("/api/repos")).status_code == 401
        async with admin.fs.mount(repos=["a"]) as fs:
            assert await fs.read("/acme/a/t.txt") == b"1"
    finally:
        await admin.transport.aclose()

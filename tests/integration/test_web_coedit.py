"""Co-editing without a browser: two pycrdt peers on a ``mesa web`` room and an agent process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.conftest import MountProcess, SpawnMount
from tests.integration.secured import SecuredDeployment
from tests.integration.webutil import web_process

pytestmark = pytest.mark.integration
pytest.importorskip("pycrdt.websocket", reason="mesa web needs the web extra")

from pycrdt import Doc, Provider, Text  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

PATH = "/acme/app/notes.md"
SETTLE_S = 30.0


class WsChannel:
    """A websockets client connection as pycrdt's `Channel`."""

    def __init__(self, ws: ClientConnection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        assert isinstance(message, bytes)
        return message


@contextlib.asynccontextmanager
async def peer(base_url: str, path: str) -> AsyncIterator[Text]:
    """A Yjs peer of ``path``'s room: yield its text once synced."""
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    url = base_url.replace("http://", "ws://") + "/yjs" + path
    async with connect(url) as ws, Provider(doc, WsChannel(ws, path)) as provider:
        await asyncio.wait_for(provider.synced.wait(), 10)
        yield text


async def settled(agent: MountProcess, *texts: Text) -> str:
    """Wait until every peer and the agent's mount read one text, for half a second."""
    deadline = time.monotonic() + SETTLE_S
    stable_since, last = time.monotonic(), None
    while True:
        await agent.call("sync")
        on_disk = (await agent.read(PATH.removeprefix("/acme/app/"))).decode()
        views = {str(t) for t in texts} | {on_disk}
        now = time.monotonic()
        if len(views) == 1 and on_disk == last:
            if now - stable_since > 0.5:
                return on_disk
        else:
            stable_since, last = now, on_disk if len(views) == 1 else None
        assert now < deadline, f"no convergence: peers {[str(t) for t in texts]}, file {on_disk!r}"
        await asyncio.sleep(0.1)


async def test_two_pycrdt_peers_and_an_agent_edit_one_file_and_converge(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    await agent.write("notes.md", b"# notes\nmiddle\nend\n")
    async with web_process(secured, "app") as web:
        async with httpx.AsyncClient(base_url=web.url) as http:
            assert (await http.get("/api/file", params={"path": PATH})).json()["editable"]
        async with peer(web.url, PATH) as one, peer(web.url, PATH) as two:
            assert str(one) == str(two) == "# notes\nmiddle\nend\n"

            async def type_into(text: Text, who: str, at_end: bool) -> None:
                for i in range(10):
                    where = len(str(text)) if at_end else 0
                    text.insert(where, f"{who}-{i}\n")
                    await asyncio.sleep(0.03)

            async def agent_edits() -> None:
                # The agent reads the file and writes it back with a line of its own in the
                # middle, while the peers type: the room applies it as a text diff.
                await asyncio.sleep(0.12)
                await agent.call("sync")
                current = (await agent.read("notes.md")).decode()
                await agent.write(
                    "notes.md", current.replace("middle\n", "middle\nAGENT\n").encode()
                )

            await asyncio.gather(
                type_into(one, "one", at_end=False),
                type_into(two, "two", at_end=True),
                agent_edits(),
            )
            final = await settled(agent, one, two)
    for who in ("one", "two"):
        for i in range(10):
            assert f"{who}-{i}\n" in final, (who, i, final)
    assert "AGENT\n" in final
    assert "# notes\n" in final
    assert final.count("AGENT") >= 1


async def test_a_page_of_another_origin_or_host_cannot_open_a_room_or_write(
    secured: SecuredDeployment, spawn_mount: SpawnMount
) -> None:
    agent = await spawn_mount("agent", secured, create=True)
    await agent.write("notes.md", b"mine\n")
    async with web_process(secured, "app") as web:
        url = web.url.replace("http://", "ws://") + "/yjs" + PATH
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin="http://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with connect(url, origin=web.url) as ws:
            assert isinstance(await asyncio.wait_for(ws.recv(), 10), bytes)  # sync step 1
        async with httpx.AsyncClient(base_url=web.url) as http:
            evil = {"Origin": "http://evil.example"}
            put = await http.put("/api/file", params={"path": PATH}, content=b"x", headers=evil)
            assert put.status_code == 403
            # DNS rebinding: a foreign name that resolves to loopback is not this page.
            rebound = {"Host": "rebound.example", "Origin": "http://rebound.example"}
            assert (await http.get("/api/repos", headers=rebound)).status_code == 421
            put = await http.put("/api/file", params={"path": PATH}, content=b"x", headers=rebound)
            assert put.status_code == 421
            own = {"Origin": web.url}
            put = await http.put("/api/file", params={"path": PATH}, content=b"ok\n", headers=own)
            assert put.status_code == 200
    await agent.call("sync")
    assert await agent.read("notes.md") == b"ok\n"

"""Helpers of the ``mesa web`` tests: a real ``mesa web`` process and an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.integration.conftest import ROOT, Deployment

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebProcess:
    """A ``python -m mesa web`` child and its base URL."""

    proc: asyncio.subprocess.Process
    url: str
    output: bytearray = field(default_factory=bytearray)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def web_process(
    deployment: Deployment,
    *repos: str,
    host: str = "127.0.0.1",
    extra: tuple[str, ...] = (),
    port: int | None = None,
) -> AsyncIterator[WebProcess]:
    """Run ``mesa web`` for ``repos`` of org acme; yield once it printed its URL."""
    port = free_port() if port is None else port
    argv = [sys.executable, "-m", "mesa", "web", "--org", "acme", "--host", host]
    argv += ["--port", str(port)]
    for repo in repos:
        argv += ["--repo", repo]
    argv += extra
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=deployment.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    web = WebProcess(proc, f"http://127.0.0.1:{port}")
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while b"serving http" not in web.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"mesa web did not start:\n{web.output.decode()}"
            line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            assert line, f"mesa web exited:\n{web.output.decode()}"
            web.output.extend(line)

        async def drain() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                web.output.extend(chunk)

        drainer = asyncio.create_task(drain())
        try:
            yield web
        finally:
            await web.close()
            drainer.cancel()
    finally:
        await web.close()


class SseReader:
    """Reads one ``GET /api/events`` stream into a list of (event, id, data) as it arrives."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, str | None, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, url, headers))

    async def _read(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        kind, event_id, data = "message", None, ""
        async with client.stream("GET", url, headers=headers, timeout=None) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    self.events.append((kind, event_id, json.loads(data)))
                    self._changed.set()
                    kind, event_id, data = "message", None, ""

    async def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (found := predicate(self.events)):
            self._changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; events so far: {self.events}"
            if self._task.done():
                self._task.result()
                raise AssertionError(f"the stream ended: {self.events}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return found

    async def ended(self, timeout_s: float) -> None:
        """Wait until the server ended the stream (raise what the reader raised)."""
        await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    def paths(self) -> list[str]:
        return [d["path"] for kind, _, d in self.events if kind == "file-change"]

"""Fixtures of the integration tests: real nats-servers and real mount processes.

Every server and every process a test starts is stopped or killed by a finalizer,
whatever the test did. Mount processes run ``tests/integration/mountproc.py`` and are
driven by `MountProcess` (JSON lines over stdin/stdout, see that module).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.natsutil import NatsServer, start_cluster, start_nats
from transports.auth import ANY_ORG, KeyRecord, Keyring, generate_key
from transports.base import UnavailableError

if TYPE_CHECKING:
    from tests.integration.secured import SecuredDeployment

ROOT = Path(__file__).resolve().parents[2]
#: Generous bounds: CI machines are slow, but no test may hang.
CALL_TIMEOUT_S = 30.0
MOUNT_TIMEOUT_S = 30.0


class ProcessError(AssertionError):
    """A mount process failed a command, died, or did not answer in time."""


@dataclass
class MountProcess:
    """One ``mountproc`` child: send commands, await replies, watch its reports."""

    name: str
    proc: asyncio.subprocess.Process
    messages: list[dict[str, Any]] = field(default_factory=list)
    mounted: dict[str, Any] = field(default_factory=dict)
    stderr: bytearray = field(default_factory=bytearray)
    _ids: int = 0
    _replies: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_reading(self) -> None:
        self._tasks.append(asyncio.create_task(self._read_stdout()))
        self._tasks.append(asyncio.create_task(self._read_stderr()))

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr.extend(b"[stdout] " + line)
                continue
            if message.get("type") == "reply":
                future = self._replies.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self.messages.append(message)
            self._changed.set()
        self._changed.set()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ProcessError(f"{self.name} exited:\n{self.stderr_tail()}"))

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr.extend(chunk)
            del self.stderr[: max(0, len(self.stderr) - 200_000)]

    def stderr_tail(self, chars: int = 4000) -> str:
        return self.stderr[-chars:].decode(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def call(
        self, cmd: str, limit_s: float = CALL_TIMEOUT_S, *, check: bool = True, **args: Any
    ) -> dict[str, Any]:
        """Send a command and return its reply (raise `ProcessError` if it failed)."""
        assert self.proc.stdin is not None
        self._ids += 1
        cid = self._ids
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cid] = future
        line = json.dumps({"id": cid, "cmd": cmd, "args": args}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ProcessError(f"{self.name} is gone:\n{self.stderr_tail()}") from exc
        try:
            reply = await asyncio.wait_for(future, limit_s)
        except TimeoutError:
            raise ProcessError(
                f"{self.name}: no reply to {cmd} within {limit_s}s\n{self.stderr_tail()}"
            ) from None
        if check and not reply["ok"]:
            raise ProcessError(f"{self.name}: {cmd} {args} failed: {reply}")
        return reply

    async def write(self, path: str, data: bytes) -> None:
        await self.call("write", path=path, data=base64.b64encode(data).decode())

    async def read(self, path: str) -> bytes:
        return base64.b64decode((await self.call("read", path=path))["data"])

    async def dump(self, limit_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        return await self.call("dump", limit_s)

    async def where(self) -> str:
        url = (await self.call("where"))["url"]
        assert isinstance(url, str)
        return url

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], Any], limit_s: float, what: str
    ) -> Any:
        """Wait until ``predicate(messages)`` is truthy and return its value."""
        deadline = time.monotonic() + limit_s
        while True:
            self._changed.clear()
            value = predicate(self.messages)
            if value:
                return value
            if not self.alive and self.proc.stdout is not None and self.proc.stdout.at_eof():
                raise ProcessError(f"{self.name} exited waiting for {what}:\n{self.stderr_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcessError(
                    f"{self.name}: {what} did not happen within {limit_s}s\n{self.stderr_tail()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def kill(self) -> None:
        """SIGKILL the process (no cleanup of any kind in the child)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self) -> None:
        """Kill if alive, reap, and read what its pipes still held."""
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


#: MESA_HOME of every child process of the tests (a temp dir, never the user's).
TEST_HOME = Path(tempfile.mkdtemp(prefix="mesa-test-home-"))


def register_key(urls: list[str], record: KeyRecord, replicas: int = 1) -> None:
    """Store a key record with the deployment's NATS credentials (from any thread or loop)."""
    from transports.jetstream import JetStreamTransport

    async def run() -> None:
        try:
            transport = await JetStreamTransport.connect(
                urls, keyring=Keyring(), replicas=replicas, connect_timeout_s=2.0
            )
        except UnavailableError:
            return  # a deployment nobody can reach (the fault tests): nothing to register
        try:
            await transport.bootstrap_key(record)
        finally:
            await transport.aclose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class Deployment:
    """What child processes need to reach the servers."""

    urls: list[str]
    api_key: str = field(default_factory=generate_key)
    replicas: int = 1

    def __post_init__(self) -> None:
        self.register_key()

    def register_key(self) -> None:
        """Register `api_key` as an admin key of every org, as an operator would."""
        record = KeyRecord.for_key(self.api_key, ANY_ORG, name="test deployment")
        register_key(self.urls, record, self.replicas)

    def client_urls(self, urls: list[str] | None = None) -> list[str]:
        """The URLs clients get: with NATS credentials in them, so clients are trusted.

        These servers run no auth callout (they accept any credentials), so a client
        must be a trusted one (`mesa._local`); `SecuredDeployment` is the other kind.
        """
        return [u.replace("nats://", "nats://mesa:trusted@", 1) for u in (urls or self.urls)]

    def env(self, urls: list[str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESA_")}
        env.update(
            MESA_NATS_URL=",".join(self.client_urls(urls)),
            MESA_API_KEY=self.api_key,
            MESA_REPLICAS=str(self.replicas),
            # MESA_NATS_URL wins, so no embedded server starts here; mount processes
            # keep their records (and default logs) under it.
            MESA_HOME=str(TEST_HOME),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        return env


SpawnMount = Callable[..., Any]


@pytest.fixture
async def spawn_mount() -> AsyncIterator[SpawnMount]:
    """Yield ``spawn(name, deployment, urls=None, create=False, wait=True)``; kills all at the end.

    With ``wait`` it returns once the child printed ``mounted`` (raising if it printed
    ``mount-failed``).
    """
    children: list[MountProcess] = []

    async def spawn(
        name: str,
        deployment: Deployment,
        *,
        urls: list[str] | None = None,
        create: bool = False,
        wait: bool = True,
    ) -> MountProcess:
        argv = [sys.executable, "-m", "tests.integration.mountproc"]
        if create:
            argv.append("--create")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=deployment.env(urls),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 30,
        )
        child = MountProcess(name, proc)
        children.append(child)
        child.start_reading()
        if wait:
            await wait_mounted(child)
        return child

    try:
        yield spawn
    finally:
        for child in children:
            await child.close()


async def wait_mounted(child: MountProcess, limit_s: float = MOUNT_TIMEOUT_S) -> dict[str, Any]:
    """Wait for the child's ``mounted`` line and return it."""

    def done(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        for m in messages:
            if m.get("type") == "mount-failed":
                raise ProcessError(f"{child.name} could not mount: {m}\n{child.stderr_tail()}")
            if m.get("type") == "mounted":
                return m
        return None

    child.mounted = await child.wait_for(done, limit_s, "mounted")
    return child.mounted


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredDeployment]:
    """nats-server behind the auth callout, with one mesa service; all stopped at the end."""
    from tests.integration.secured import start_secured, stop_secured

    deployment = start_secured(tmp_path)
    try:
        yield deployment
    finally:
        stop_secured(deployment)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream nats-server on loopback (fsync always), stopped at the end."""
    server = start_nats(tmp_path, sync_always=True)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """A three-node JetStream cluster on loopback, every node killed at the end."""
    servers = start_cluster(tmp_path, 3, sync_always=True)
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()

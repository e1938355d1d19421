"""A mount in its own OS process, driven by JSON lines: the other side of the integration tests.

Run it as ``python -m tests.integration.mountproc --org acme --repo app`` with
``MESA_NATS_URL`` (and ``MESA_API_KEY``, ``MESA_REPLICAS``) in the environment, from the
repository root. It mounts the repo through the public SDK (``Mesa(...).fs.mount``) and
prints one JSON object per line on stdout:

- ``{"type": "mounted", "pid", "mount_id", "change_id", "url"}`` once mounted, or
  ``{"type": "mount-failed", "error", "message"}`` (exit code 2);
- a reply ``{"type": "reply", "id", "ok": true, ...}`` or ``{"type": "reply", "id",
  "ok": false, "error", "message", "errno"}`` for every command;
- asynchronous reports: ``event`` (a subscription handler ran; it read the path's bytes
  itself), ``ack`` / ``nack`` / ``gave-up`` / ``workload-done`` (a background workload).

Commands arrive on stdin, one JSON object per line, each with an ``id`` and a ``cmd``
(see `Agent`); each runs as its own task, so a slow one does not block the others.
End of stdin (the test died) closes the mount and exits, so no process outlives its test.

Workload bytes are a pure function of the path (`workload_bytes`), so the test can
recompute what every acknowledged write must read back as. A write counts as
acknowledged only when the SDK call returned; a call that raised is reported as a
``nack`` and retried with the same bytes until it returns or the deadline passes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from typing import Any

from mesa import ConflictError, Mesa, MesaFileSystem, WatchEvent

ORG = "acme"
REPO = "app"


def workload_bytes(path: str, size: int) -> bytes:
    """Return the bytes a workload writes to ``path`` (recomputable by the test)."""
    unit = f"{path}|".encode()
    return (unit * (size // len(unit) + 1))[:size]


def random_bytes(size: int, seed: int) -> bytes:
    """Return ``size`` incompressible bytes determined by ``seed``."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def emit(message: dict[str, Any]) -> None:
    """Print one JSON line and flush it."""
    sys.stdout.write(json.dumps(message, sort_keys=True) + "\n")
    sys.stdout.flush()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "errno": getattr(exc, "errno", None),
        "mro": [cls.__name__ for cls in type(exc).__mro__],
    }


async def connected_url(mesa: Mesa) -> str | None:
    """Return ``host:port`` of the NATS server the client is connected to now."""
    transport: Any = mesa.transport
    if hasattr(transport, "get"):  # the lazily connected default transport
        transport = await transport.get()
    server: str | None = transport.connected_server
    return server


class Agent:
    """Runs the commands of one mounted process."""

    def __init__(self, mesa: Mesa, fs: MesaFileSystem, root: str) -> None:
        self.mesa = mesa
        self.fs = fs
        self.root = root
        self.tasks: set[asyncio.Task[None]] = set()
        self.exit = asyncio.Event()

    def abs(self, path: str) -> str:
        """Return the absolute path of a path relative to the repo root."""
        return f"{self.root}/{path.lstrip('/')}" if path else self.root

    async def run(self, command: dict[str, Any]) -> None:
        """Run one command and print its reply."""
        cid = command.get("id")
        try:
            handler = getattr(self, "cmd_" + str(command["cmd"]).replace("-", "_"))
            result = await handler(**command.get("args", {}))
        except Exception as exc:
            emit({"type": "reply", "id": cid, "ok": False, **_error(exc)})
        else:
            emit({"type": "reply", "id": cid, "ok": True, **(result or {})})

    # -- commands -----------------------------------------------------------------

    async def cmd_write(self, path: str, data: str) -> dict[str, Any]:
        await self.fs.write(self.abs(path), base64.b64decode(data))
        return {}

    async def cmd_write_random(self, path: str, size: int, seed: int) -> dict[str, Any]:
        """Write ``size`` pseudo-random bytes (the test need not ship them over a pipe)."""
        data = random_bytes(size, seed)
        started = time.monotonic()
        await self.fs.write(self.abs(path), data)
        return {"sha256": sha256(data), "size": size, "elapsed_s": time.monotonic() - started}

    async def cmd_read(self, path: str) -> dict[str, Any]:
        return {"data": _b64(await self.fs.read(self.abs(path)))}

    async def cmd_rm(self, path: str) -> dict[str, Any]:
        await self.fs.rm(self.abs(path))
        return {}

    async def cmd_mkdir(self, path: str) -> dict[str, Any]:
        await self.fs.mkdir(self.abs(path), recursive=True)
        return {}

    async def cmd_symlink(self, target: str, path: str) -> dict[str, Any]:
        await self.fs.symlink(target, self.abs(path))
        return {}

    async def cmd_set_metadata(self, path: str, metadata: dict[str, str | None]) -> dict[str, Any]:
        await self.fs.set_metadata(self.abs(path), metadata)
        return {}

    async def cmd_get_metadata(self, path: str) -> dict[str, Any]:
        return {"metadata": await self.fs.get_metadata(self.abs(path))}

    async def cmd_sync(self) -> dict[str, Any]:
        await self.fs.wait_synced()
        return {}

    async def cmd_where(self) -> dict[str, Any]:
        return {"url": await connected_url(self.mesa)}

    async def cmd_exit(self) -> dict[str, Any]:
        self.exit.set()
        return {}

    async def cmd_dump(self) -> dict[str, Any]:
        """Wait until synced, then list the whole repo through the public API."""
        await self.fs.wait_synced()
        tree: dict[str, Any] = {}
        await self._walk("", tree)
        repo = self.fs._repos[REPO]
        return {"tree": tree, "seq": repo.replica.seq, "hash": repo.replica.state.tree.hash()}

    async def _walk(self, rel: str, tree: dict[str, Any]) -> None:
        for name in await self.fs.readdir(self.abs(rel)):
            child = f"{rel}/{name}" if rel else name
            st = await self.fs.lstat(self.abs(child))
            if st.is_symbolic_link:
                tree[child] = {"kind": "link", "target": await self.fs.readlink(self.abs(child))}
            elif st.is_directory:
                tree[child] = {"kind": "dir"}
                await self._walk(child, tree)
            else:
                data = await self.fs.read(self.abs(child))
                tree[child] = {"kind": "file", "sha256": sha256(data), "size": len(data)}

    async def cmd_subscribe(self) -> dict[str, Any]:
        """Subscribe; the handler reads each changed path and reports what it read."""

        async def handler(event: WatchEvent) -> None:
            report: dict[str, Any] = {
                "type": "event",
                "path": event.path,
                "recursive": event.recursive,
                "t": time.time(),
            }
            try:
                if await self.fs.exists(event.path):
                    st = await self.fs.stat(event.path)
                    if st.is_file:
                        report["data"] = _b64(await self.fs.read(event.path))
                else:
                    report["missing"] = True
            except Exception as exc:
                report.update(_error(exc))
            emit(report)

        self.fs.subscribe(handler)
        return {}

    async def cmd_race(self, path: str, at_ms: int, data: str) -> dict[str, Any]:
        """Write at wall-clock ``at_ms`` (sleep, then spin the last milliseconds)."""
        at = at_ms / 1000
        await asyncio.sleep(max(0.0, at - time.time() - 0.005))
        while time.time() < at:
            pass
        started = time.time()
        await self.fs.write(self.abs(path), base64.b64decode(data))
        return {"started": started, "late_ms": (started - at) * 1000}

    async def cmd_workload(
        self,
        prefix: str,
        count: int,
        size: int = 64,
        pause_ms: int = 0,
        deadline_s: float = 45.0,
    ) -> dict[str, Any]:
        """Start writing ``count`` files ``<prefix>/f<i>`` in the background; reply at once."""
        task = asyncio.create_task(self._workload(prefix, count, size, pause_ms, deadline_s))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return {}

    async def _workload(
        self, prefix: str, count: int, size: int, pause_ms: int, deadline_s: float
    ) -> None:
        deadline = time.monotonic() + deadline_s
        acked = failed = 0
        await self.fs.mkdir(self.abs(prefix), recursive=True)
        for i in range(count):
            path = f"{prefix}/f{i:04d}"
            data = workload_bytes(path, size)
            attempt = 0
            while True:
                attempt += 1
                try:
                    await self.fs.write(self.abs(path), data)
                except Exception as exc:
                    emit({"type": "nack", "path": path, "attempt": attempt, **_error(exc)})
                    if time.monotonic() > deadline:
                        failed += 1
                        emit({"type": "gave-up", "path": path})
                        break
                    await asyncio.sleep(0.2)
                    continue
                acked += 1
                emit(
                    {
                        "type": "ack",
                        "path": path,
                        "sha256": sha256(data),
                        "size": size,
                        "attempt": attempt,
                        "t": time.time(),
                    }
                )
                break
            if pause_ms:
                await asyncio.sleep(pause_ms / 1000)
        emit({"type": "workload-done", "prefix": prefix, "acked": acked, "failed": failed})


async def _commands(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not agent.exit.is_set():
        line = await reader.readline()
        if not line:
            agent.exit.set()  # the test went away: leave
            return
        command = json.loads(line)
        task = asyncio.create_task(agent.run(command))
        agent.tasks.add(task)
        task.add_done_callback(agent.tasks.discard)


async def main(argv: list[str] | None = None) -> int:
    """Mount, report, run commands until ``exit`` or end of stdin."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--org", default=ORG)
    parser.add_argument("--repo", default=REPO)
    parser.add_argument("--create", action="store_true", help="create the repo if missing")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        mesa = Mesa(org=args.org, api_key=os.environ["MESA_API_KEY"])
        if args.create:
            with contextlib.suppress(ConflictError):
                await mesa.repos.create(args.repo)
        mount = mesa.fs.mount(repos=[args.repo])
        fs = await mount.__aenter__()
    except Exception as exc:
        emit({"type": "mount-failed", "elapsed_s": time.monotonic() - started, **_error(exc)})
        return 2
    agent = Agent(mesa, fs, f"/{args.org}/{args.repo}")
    repo = fs._repos[args.repo]
    emit(
        {
            "type": "mounted",
            "pid": os.getpid(),
            "mount_id": fs.mount_id,
            "change_id": repo.change_id,
            "url": await connected_url(mesa),
        }
    )
    reader = asyncio.create_task(_commands(agent))
    await agent.exit.wait()
    reader.cancel()
    for task in list(agent.tasks):
        if task is not asyncio.current_task():
            task.cancel()
    await asyncio.gather(*agent.tasks, reader, return_exceptions=True)
    await mount.__aexit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

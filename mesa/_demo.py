"""The demo: two processes mount one change, one subscribed; a racing pair makes a conflict.

Process A (an agent) creates a repo and starts process B (a human's app backend) with
``mesa demo --peer <repo>``. B mounts the same change and subscribes; the two coordinate
only through files in the change itself:

1. B writes ``.peer-ready`` once subscribed; A waits for it.
2. A writes two files; B's handler prints each event and the bytes it reads.
3. A writes ``.race-at`` holding a wall-clock instant 400 ms ahead; both processes
   sleep until then and write ``notes.md`` (a race inside the 1 s window), wait until
   they have folded both writes, and print what they read; B writes what it read to
   ``.peer-read`` so A can check both processes read the same conflict block.
4. A resolves the conflict by writing the file again and writes ``.done``; B prints the
   resolution it sees and exits.

It runs on whatever the client's default is: the embedded local server unless
MESA_NATS_URL says otherwise. The exit code is 0 only when every check held. A deletes
the repo it created when it is done, whatever happened (unless ``keep``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time

from mesa._client import Mesa
from mesa._fs import MesaFileSystem
from mesa._types import WatchEvent

RACE_LEAD_MS = 400
PEER_TIMEOUT_S = 60.0


async def _wait_for(fs: MesaFileSystem, path: str, timeout_s: float = PEER_TIMEOUT_S) -> bytes:
    """Wait until ``path`` exists on ``fs`` and return its bytes."""
    deadline = time.monotonic() + timeout_s
    while not await fs.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s}s")
        await asyncio.sleep(0.02)
    return await fs.read(path)


async def _race(fs: MesaFileSystem, path: str, at_ms: int, data: bytes) -> bytes:
    """Write ``data`` at wall-clock ``at_ms``, wait for the other side, return what reads back."""
    await asyncio.sleep(max(0.0, at_ms / 1000 - time.time()))
    await fs.write(path, data)
    await asyncio.sleep(0.3)  # let the other process's write reach the log
    await fs.wait_synced()
    return await fs.read(path)


async def run_demo(org: str = "acme", *, keep: bool = False) -> int:
    """Process A: create the repo, start process B, drive the scenario, check it.

    The repo is deleted at the end (pass ``keep`` to look at it afterwards).
    """
    mesa = Mesa(org=org)
    repo = f"demo-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    try:
        return await _drive(mesa, org, repo)
    finally:
        if keep:
            print(f"[A agent] kept repo {org}/{repo}")
        else:
            await mesa.repos.delete(repo)
            print(f"[A agent] deleted repo {org}/{repo}")
        await mesa.transport.aclose()


async def _drive(mesa: Mesa, org: str, repo: str) -> int:
    root = f"/{org}/{repo}"
    print(f"[A agent] created repo {org}/{repo}; starting process B")
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesa", "demo", "--org", org, "--peer", repo
    )
    try:
        async with mesa.fs.mount(repos=[repo]) as fs:
            await _wait_for(fs, f"{root}/.peer-ready")
            print("[A agent] B is subscribed; writing two files")
            await fs.mkdir(f"{root}/src", recursive=True)
            await fs.write(f"{root}/src/app.py", b"print('hello')\n")
            await fs.write(f"{root}/notes.md", b"# notes\nfirst line\n")
            at_ms = int(time.time() * 1000) + RACE_LEAD_MS
            await fs.write(f"{root}/.race-at", str(at_ms).encode())
            mine = await _race(fs, f"{root}/notes.md", at_ms, b"# notes\nagent's line\n")
            theirs = await _wait_for(fs, f"{root}/.peer-read")
            print("[A agent] notes.md after the race:\n" + mine.decode())
            same = mine == theirs
            print(f"[A agent] B read {'the same bytes' if same else 'DIFFERENT bytes'}")
            await fs.write(f"{root}/notes.md", b"# notes\nagent's line\nhuman's line\n")
            resolved = await fs.read(f"{root}/notes.md")
            await fs.write(f"{root}/.done", b"")
        peer_code = await asyncio.wait_for(peer.wait(), PEER_TIMEOUT_S)
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
    ok = same and b"<<<<<<< conflict 1 of 1" in mine and b"<<<<<<<" not in resolved
    ok = ok and peer_code == 0
    print(f"[A agent] demo {'passed' if ok else 'FAILED'} (process B exit code {peer_code})")
    return 0 if ok else 1


async def run_peer(org: str, repo: str) -> int:
    """Process B: mount, subscribe, print what arrives, take part in the race."""
    mesa = Mesa(org=org)
    root = f"/{org}/{repo}"
    done = asyncio.Event()
    async with mesa.fs.mount(repos=[repo]) as fs:

        async def on_change(event: WatchEvent) -> None:
            name = event.path.rsplit("/", 1)[-1]
            if name == ".done":
                done.set()
            if name.startswith(".") or event.recursive or not await fs.exists(event.path):
                return
            data = await fs.read(event.path)
            print(f"[B human] event {event.path}: {data[:48]!r}", flush=True)

        sub = fs.subscribe(on_change)
        await fs.write(f"{root}/.peer-ready", str(os.getpid()).encode())
        at_ms = int(await _wait_for(fs, f"{root}/.race-at"))
        read = await _race(fs, f"{root}/notes.md", at_ms, b"# notes\nhuman's line\n")
        await fs.write(f"{root}/.peer-read", read)
        await asyncio.wait_for(done.wait(), PEER_TIMEOUT_S)
        final = await fs.read(f"{root}/notes.md")
        print(f"[B human] final notes.md: {final!r}", flush=True)
        await sub.unsubscribe()
    return 0

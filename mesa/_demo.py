"""The demo: two mounts edit one change, one subscribed; a racing pair makes a conflict.

It uses the local default server, so it runs with no configuration. What it prints
is what happened: the events the subscriber saw, the conflict block both mounts
read back, and the resolution.
"""

from __future__ import annotations

import asyncio
import secrets

from mesa._client import Mesa
from mesa._types import WatchEvent


async def run_demo(org: str = "acme") -> int:
    """Run the demo; return a process exit code (0 when every check held)."""
    mesa = Mesa(org=org)
    repo = f"demo-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    root = f"/{org}/{repo}"
    print(f"created repo {org}/{repo}")
    seen: list[WatchEvent] = []

    async with mesa.fs.mount(repos=[repo]) as agent, mesa.fs.mount(repos=[repo]) as human:

        async def on_change(event: WatchEvent) -> None:
            seen.append(event)
            if not event.recursive and await human.exists(event.path):
                data = await human.read(event.path)
                print(f"  [human sees] {event.path}: {data[:60]!r}")

        sub = human.subscribe(on_change)
        print("agent writes two files; the human's mount is subscribed:")
        await agent.mkdir(f"{root}/src", recursive=True)
        await agent.write(f"{root}/src/app.py", b"print('hello')\n")
        await agent.write(f"{root}/notes.md", b"# notes\nfirst line\n")
        await human.wait_synced()
        await asyncio.sleep(0.05)

        print("\nboth write notes.md at the same moment (a race inside the 1 s window):")
        await asyncio.gather(
            agent.write(f"{root}/notes.md", b"# notes\nagent's line\n"),
            human.write(f"{root}/notes.md", b"# notes\nhuman's line\n"),
        )
        await agent.wait_synced()
        await human.wait_synced()
        from_agent = await agent.read(f"{root}/notes.md")
        from_human = await human.read(f"{root}/notes.md")
        print("notes.md now reads, identically on both mounts:")
        print(from_human.decode())
        print("\nthe agent resolves it by writing the file again:")
        await agent.write(f"{root}/notes.md", b"# notes\nagent's line\nhuman's line\n")
        await human.wait_synced()
        resolved = await human.read(f"{root}/notes.md")
        print(resolved.decode())
        await sub.unsubscribe()

    ok = from_agent == from_human and b"<<<<<<< conflict 1 of 1" in from_human
    ok = ok and b"<<<<<<<" not in resolved and bool(seen)
    print(f"{len(seen)} events delivered; demo {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1

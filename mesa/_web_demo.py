"""``mesa demo --web``: the human-to-agent pattern in one command.

Creates a repo, starts a scripted agent in a second process (``mesa demo --agent
REPO``) that keeps editing files of the repo's ``main`` change through its own mount,
and serves ``mesa web`` on loopback for it, printing the URL. Open it, watch the agent's
edits arrive, and type into the same files: both survive. Ctrl-C stops the page and the
agent; the repo is deleted unless ``keep``. The agent also stops when its parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys

from mesa._client import Mesa

#: Seconds between two of the scripted agent's edits.
AGENT_STEP_S = 2.0

_PLAN = """# plan

The agent edits this file and src/app.py every few seconds.
Type anywhere: your edits and the agent's both survive.
"""


async def run_agent(org: str, repo: str, *, step_s: float = AGENT_STEP_S) -> int:
    """The scripted agent: edit ``notes.md`` and ``src/app.py`` forever (until orphaned)."""
    parent = os.getppid()
    root = f"/{org}/{repo}"
    mesa = Mesa(org=org)
    try:
        async with mesa.fs.mount(repos=[repo]) as fs:
            if not await fs.exists(f"{root}/src"):
                await fs.mkdir(f"{root}/src")
            await fs.write(f"{root}/notes.md", _PLAN)
            step = 0
            while os.getppid() == parent:
                step += 1
                # Append a line through a read-modify-write, as an editor agent would.
                notes = (await fs.read(f"{root}/notes.md")).decode()
                await fs.write(f"{root}/notes.md", notes + f"- agent step {step}\n")
                code = f"def step() -> int:\n    return {step}\n"
                await fs.write(f"{root}/src/app.py", code)
                print(f"[agent] step {step}: edited notes.md and src/app.py", flush=True)
                await asyncio.sleep(step_s)
    finally:
        await mesa.transport.aclose()
    return 0


async def run_web_demo(org: str, *, port: int, keep: bool) -> int:
    """Create a repo, start the agent, serve the page until interrupted."""
    from mesa._types import RepoConfig
    from mesa._web import serve

    mesa = Mesa(org=org)
    repo = f"demo-web-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    print(f"[demo] created repo {org}/{repo}; starting the agent (a second process)", flush=True)
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesa", "demo", "--org", org, "--agent", repo
    )
    try:
        print(
            f"[demo] open http://127.0.0.1:{port}/?open=/{org}/{repo}/notes.md "
            "(Ctrl-C stops the demo)",
            flush=True,
        )
        return await serve(org, [RepoConfig(repo)], host="127.0.0.1", port=port)
    finally:
        if agent.returncode is None:
            agent.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.wait(), 10)
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
        if keep:
            print(f"[demo] kept repo {org}/{repo}", flush=True)
        else:
            await mesa.repos.delete(repo)
            print(f"[demo] deleted repo {org}/{repo}", flush=True)
        await mesa.transport.aclose()

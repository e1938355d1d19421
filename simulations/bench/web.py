"""Live benchmark of ``mesa web``: an agent's write to the text in a browser's DOM.

``python -m simulations bench web [--writes N]`` starts a private embedded server, a
``mesa web`` process, headless Chromium (Debian's ``/usr/bin/chromium`` through
Playwright) with the page open on one file, and — as the baseline in the same run —
a second SDK mount in another process subscribed to the change
(`simulations.bench.realtime`'s ``sub-mesa`` role). A mount in this process (the agent)
then writes the file N times, one write at a time: each write waits until the page
showed the previous one, so the room never skips a version.

- page: from just before ``fs.write`` to the moment a ``MutationObserver`` on the
  editor's DOM sees the new text (wall clock on both sides: one host, one clock;
  Chromium's ``performance.now`` is coarsened to about 0.1 ms);
- SDK: from just before ``fs.write`` to the other process's subscription handler having
  read the new bytes (``time.monotonic_ns``, one clock for every process).

The path to the page is: the write's fold in the ``mesa web`` mount, its event, the
room's read and text diff, the Yjs update over the websocket, y-codemirror's dispatch,
CodeMirror's DOM update. Nothing here asserts a target: it prints both rows and the
ratio. Needs ``mesafs[web]``, playwright and Debian's chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mesa import Mesa, server
from simulations.bench.realtime import Env, _expect_line, _percentiles, _spawn

ORG = "bench"
WARMUP = 20
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OBSERVER = """() => {
  window.benchSeen = [];
  const view = window.mesaWeb.state.view;
  new MutationObserver(() => {
    const at = performance.timeOrigin + performance.now();
    window.benchSeen.push([view.state.doc.toString(), at]);
  }).observe(document.querySelector(".cm-content"),
             { subtree: true, childList: true, characterData: true });
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_web(env: Env, repo: str) -> tuple[asyncio.subprocess.Process, str]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "mesa", "web", "--org", ORG, "--repo", repo, "--port", str(port)),
        stdout=asyncio.subprocess.PIPE,
        env=env.child_env(),
    )
    assert proc.stdout is not None
    while b"serving http" not in (line := await asyncio.wait_for(proc.stdout.readline(), 60)):
        if not line:
            raise RuntimeError("mesa web exited before serving")
    return proc, f"http://127.0.0.1:{port}"


async def measure(env: Env, writes: int) -> dict[str, Any]:
    """One run: the page's and the SDK mount's latency for the same writes."""
    from playwright.async_api import async_playwright

    mesa = Mesa(ORG, env.key)
    repo = f"web-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    path = f"/{ORG}/{repo}/f.txt"
    total = writes + WARMUP
    async with mesa.fs.mount(repos=[repo]) as fs:
        await fs.write(path, str(time.monotonic_ns()).encode())
        web, url = await _start_web(env, repo)
        sub = await _spawn(env, "sub-mesa", repo, str(total))
        await _expect_line(sub, "ready")
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = await browser.new_page()
                await page.goto(f"{url}/?open={path}")
                await page.wait_for_selector("#editor[data-synced='true']", timeout=60_000)
                await page.evaluate(OBSERVER)
                sent_wall_ms: dict[str, float] = {}
                for _ in range(total):
                    value = str(time.monotonic_ns())
                    sent_wall_ms[value] = time.time() * 1000
                    await fs.write(path, value.encode())
                    check = f"() => window.benchSeen.some(([t]) => t === {json.dumps(value)})"
                    await page.wait_for_function(check, polling=2, timeout=30_000)
                seen = await page.evaluate("() => window.benchSeen")
                await browser.close()
            sdk = json.loads(await _expect_line(sub, "samples"))
        finally:
            web.terminate()
            await web.wait()
            if sub.returncode is None:
                sub.kill()
            await sub.wait()
    first_seen: dict[str, float] = {}
    for text, at_ms in seen:
        first_seen.setdefault(text, at_ms)
    page_ns = [int((first_seen[v] - sent_wall_ms[v]) * 1e6) for v in sent_wall_ms]
    return {
        "page": _percentiles(page_ns[WARMUP:]),
        "sdk_mount": _percentiles(list(sdk[WARMUP:])),
    }


def report(results: dict[str, Any]) -> str:
    """The two rows and the ratio, as a markdown table."""
    page, sdk = results["page"], results["sdk_mount"]
    rows = [
        "| agent write visible in | n | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| a second SDK mount (another process) | {sdk['n']} | {sdk['p50_ms']:.2f} "
        f"| {sdk['p99_ms']:.2f} | {sdk['max_ms']:.2f} |",
        f"| the page's DOM (mesa web, headless Chromium) | {page['n']} | {page['p50_ms']:.2f} "
        f"| {page['p99_ms']:.2f} | {page['max_ms']:.2f} |",
        "",
        f"page / SDK mount: p50 x{page['p50_ms'] / sdk['p50_ms']:.1f}, "
        f"p99 x{page['p99_ms'] / sdk['p99_ms']:.1f}",
    ]
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the measurement against a private server; return the results."""
    with tempfile.TemporaryDirectory(prefix="mesa-bench-web-") as home:
        info = server.ensure_running(Path(home))
        env = Env(info.url, info.admin_key, info.authenticated_url)
        os.environ["MESA_NATS_URL"] = env.url
        try:
            return await measure(env, args.writes)
        finally:
            server.stop(Path(home))


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m simulations bench web``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations bench web",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--writes", type=int, default=300, help="writes timed (after warm-up)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The page of ``mesa web`` in a real browser: headless Chromium (Debian's ``chromium``
package) driven by Playwright with ``executable_path`` (never ``playwright install``).

Every browser starts with a fresh profile (Playwright gives each launch a new temporary
``--user-data-dir``) and the flags below; the network is closed. Each step saves a
screenshot under the test's temp dir.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mesa import Mesa
from tests.integration.conftest import MountProcess, SpawnMount
from tests.integration.secured import SecuredDeployment
from tests.integration.webutil import free_port, web_process

pytestmark = pytest.mark.integration
pytest.importorskip("pycrdt.websocket", reason="mesa web needs the web extra")
playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright")

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
STEP_S = 20.0
NOTES = "/acme/app/notes.md"

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class Shots:
    """Numbered screenshots of the test's steps, under its temp dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "screenshots"
        self.directory.mkdir()
        self.taken: list[Path] = []

    async def __call__(self, page: Any, name: str) -> None:
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path))
        assert path.stat().st_size > 1000
        self.taken.append(path)


async def editor_text(page: Any) -> str:
    text = await page.evaluate("() => window.mesaWeb.state.view?.state.doc.toString() ?? null")
    return "" if text is None else str(text)


async def until(what: str, check: Any, timeout_s: float = STEP_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def open_page(browser: Any, url: str, path: str | None = None) -> Any:
    page = await (await browser.new_context(viewport={"width": 1200, "height": 700})).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(url)
    await page.wait_for_selector("#live:text('live')", timeout=STEP_S * 1000)
    if path is not None:
        await page.click(f"#tree li[data-path='{path}']", timeout=STEP_S * 1000)
        await page.wait_for_selector("#editor[data-synced='true']", timeout=STEP_S * 1000)
    return page


async def agent_reads(agent: MountProcess, path: str) -> str:
    await agent.call("sync")
    return (await agent.read(path.removeprefix("/acme/app/"))).decode()


async def test_an_agents_write_shows_in_the_page_without_a_reload(
    secured: SecuredDeployment, spawn_mount: SpawnMount, browser: Any, tmp_path: Path
) -> None:
    shot = Shots(tmp_path)
    agent = await spawn_mount("agent", secured, create=True)
    await agent.write("notes.md", b"# notes\nfirst\n")
    async with web_process(secured, "app") as web:
        page = await open_page(browser, web.url, NOTES)
        await page.evaluate("() => { window.notReloaded = true; }")
        assert await editor_text(page) == "# notes\nfirst\n"
        await shot(page, "opened")
        # A new file appears in the tree; the open file's text follows the agent.
        await agent.call("mkdir", path="src")
        await agent.write("src/new.py", b"print('new')\n")
        await page.wait_for_selector("#tree li[data-path='/acme/app/src/new.py']")
        await agent.write("notes.md", b"# notes\nfirst\nthe agent's second line\n")

        async def shows() -> bool:
            return "the agent's second line" in await editor_text(page)

        await until("the agent's line in the editor", shows)
        assert await page.evaluate("() => window.notReloaded === true")
        assert "the agent's second line" in await page.inner_text(".cm-content")
        await shot(page, "agent-wrote")
        # History: the file's two writes; picking both shows the diff between them.
        boxes = page.locator("#history input[type=checkbox]")
        await until("two history entries", lambda: _count_is(boxes, 2))
        await boxes.nth(0).check()
        await boxes.nth(1).check()
        await page.click("#diff-button")
        await page.wait_for_selector("#diff:has-text('+the agent')")
        await page.click("#change-diff-button")
        await page.wait_for_selector("#diff:has-text('new.py')")
        await shot(page, "history")
        # A binary file opens read-only, without an editor or a room.
        await agent.write("logo.bin", b"\x89PNG\x00\x01")
        await page.click("#tree li[data-path='/acme/app/logo.bin']")
        await page.wait_for_selector("#editor .binary:has-text('binary file, 6 bytes')")
        assert "read-only" in await page.inner_text("#status")
        assert await page.locator(".cm-content").count() == 0
        await shot(page, "binary")
        assert page.errors == []


async def _count_is(locator: Any, n: int) -> bool:
    return bool(await locator.count() == n)


async def test_typing_in_the_page_reaches_the_file_on_another_mount(
    secured: SecuredDeployment, spawn_mount: SpawnMount, browser: Any, tmp_path: Path
) -> None:
    shot = Shots(tmp_path)
    agent = await spawn_mount("agent", secured, create=True)
    await agent.write("notes.md", b"# notes\n")
    async with web_process(secured, "app") as web:
        page = await open_page(browser, web.url, NOTES)
        await page.click(".cm-content")
        await page.keyboard.press("Control+End")
        await page.keyboard.type("typed in the browser\n")
        await shot(page, "typed")

        async def reached() -> bool:
            return await agent_reads(agent, NOTES) == "# notes\ntyped in the browser\n"

        await until("the typed text on the agent's mount", reached)
        assert page.errors == []


async def test_two_pages_typing_into_one_file_converge_with_nothing_lost(
    secured: SecuredDeployment, spawn_mount: SpawnMount, browser: Any, tmp_path: Path
) -> None:
    shot = Shots(tmp_path)
    agent = await spawn_mount("agent", secured, create=True)
    await agent.write("notes.md", b"top\nbottom\n")
    async with web_process(secured, "app") as web:
        one = await open_page(browser, web.url, NOTES)
        two = await open_page(browser, web.url, NOTES)

        async def type_at(page: Any, key: str, words: str) -> None:
            await page.click(".cm-content")
            await page.keyboard.press(key)
            await page.keyboard.type(words, delay=15)

        await asyncio.gather(
            type_at(one, "Control+Home", "alpha beta gamma "),
            type_at(two, "Control+End", "one two three"),
        )

        async def converged() -> str | None:
            a, b = await editor_text(one), await editor_text(two)
            on_disk = await agent_reads(agent, NOTES)
            return a if a == b == on_disk else None

        final = await until("both pages and the file to agree", converged)
        assert final == "alpha beta gamma top\nbottom\none two three"
        await shot(one, "page-one")
        await shot(two, "page-two")
        assert one.errors == two.errors == []


async def test_a_conflicted_file_shows_its_markers_and_an_edit_resolves_it(
    secured: SecuredDeployment, spawn_mount: SpawnMount, browser: Any, tmp_path: Path
) -> None:
    shot = Shots(tmp_path)
    alice = await spawn_mount("alice", secured, create=True)
    bob = await spawn_mount("bob", secured)
    await alice.write("notes.md", b"base\n")
    await bob.call("sync")
    at_ms = int(time.time() * 1000) + 300
    await asyncio.gather(
        alice.call(
            "race", path="notes.md", at_ms=at_ms, data=base64.b64encode(b"alice\n").decode()
        ),
        bob.call("race", path="notes.md", at_ms=at_ms, data=base64.b64encode(b"bob\n").decode()),
    )
    block = await agent_reads(alice, NOTES)
    assert block.startswith("<<<<<<< conflict 1 of 1\n"), block
    async with web_process(secured, "app") as web:
        page = await open_page(browser, web.url, NOTES)
        assert await editor_text(page) == block
        await page.wait_for_selector("#status[data-conflict='true']")
        markers = await page.locator(".mesa-conflict-marker").count()
        assert markers >= 4  # <<<, +++ side #1, --- base, +++ side #2, >>>
        await shot(page, "conflict")
        # Resolving is editing: replace the block with one line.
        await page.click(".cm-content")
        await page.keyboard.press("Control+a")
        await page.keyboard.type("alice and bob\n")

        async def resolved() -> bool:
            return await agent_reads(alice, NOTES) == "alice and bob\n"

        await until("the resolution on another mount", resolved)
        await page.wait_for_selector("#status[data-conflict='false']")
        await shot(page, "resolved")
        assert page.errors == []


async def test_off_loopback_the_page_with_a_token_for_a_shows_and_edits_only_a(
    secured: SecuredDeployment, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shot = Shots(tmp_path)
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    admin = Mesa(org="acme", api_key=secured.api_key)
    try:
        for name in ("a", "b"):
            await admin.repos.create(name)
            async with admin.fs.mount(repos=[name]) as fs:
                await fs.write(f"/acme/{name}/{name}.txt", f"{name}'s file\n".encode())
        token_a = admin.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=600).token
        async with web_process(secured, "a", "b", host="0.0.0.0") as web:
            refused = await (await browser.new_context()).new_page()
            await refused.goto(web.url)
            await refused.wait_for_selector("#status:has-text('401')")
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{web.url}/?token={token_a}")
            assert "token" not in page.url  # moved into a cookie
            await page.wait_for_selector("#live:text('live')")
            options = await page.locator("#repo option").all_inner_texts()
            assert len(options) == 1
            assert options[0].startswith("acme/a @ ")
            await page.click("#tree li[data-path='/acme/a/a.txt']")
            await page.wait_for_selector("#editor[data-synced='true']")
            await page.click(".cm-content")
            await page.keyboard.press("Control+End")
            await page.keyboard.type("typed with a token\n")
            await shot(page, "token-a")

            async def reached() -> bool:
                async with admin.fs.mount(repos=["a"]) as fs:
                    return await fs.read("/acme/a/a.txt") == b"a's file\ntyped with a token\n"

            await until("the edit made with the token", reached)
    finally:
        await admin.transport.aclose()


async def test_the_page_catches_up_after_mesa_web_restarts(
    secured: SecuredDeployment, spawn_mount: SpawnMount, browser: Any, tmp_path: Path
) -> None:
    shot = Shots(tmp_path)
    agent = await spawn_mount("agent", secured, create=True)
    await agent.write("notes.md", b"before\n")
    port = free_port()
    async with web_process(secured, "app", port=port) as web:
        page = await open_page(browser, web.url, NOTES)
        await page.evaluate("() => { window.notReloaded = true; }")
    # The server is gone: the agent goes on writing.
    await agent.write("while-down.txt", b"x")
    await agent.write("notes.md", b"before\nwritten while the page's server was down\n")
    async with web_process(secured, "app", port=port):
        # The EventSource reconnects with its old Last-Event-ID: a snapshot reloads the
        # tree; the editor reopens its room from the file.
        await page.wait_for_selector(
            "#tree li[data-path='/acme/app/while-down.txt']", timeout=STEP_S * 1000
        )

        async def caught_up() -> bool:
            return "written while the page's server was down" in await editor_text(page)

        await until("the editor to show what was written meanwhile", caught_up)
        await agent.write("after.txt", b"y")
        await page.wait_for_selector("#tree li[data-path='/acme/app/after.txt']")
        assert await page.evaluate("() => window.notReloaded === true")
        await shot(page, "caught-up")

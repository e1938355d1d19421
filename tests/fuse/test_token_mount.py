"""The main scenario: an agent's sandbox mounts one repo with FUSE, holding one token.

The deployment is behind the auth callout (`secured`): the mount process knows only a
short-lived token for ``acme/app``; ordinary tools write through it, an SDK client of
the org sees the writes, the other repo is out of reach (the mount refuses to mount
it), and a read-only token gives a mount where writes fail with EROFS.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesa_sdk import Mesa
from tests.fuse.conftest import StartFuse
from tests.fuse.fuseutil import FuseMount
from tests.integration.secured import SecuredDeployment


@dataclass
class TokenHolder:
    """What a sandbox holds: the deployment's URL and one token (no key, no NATS login)."""

    deployment: SecuredDeployment
    token: str

    def env(self) -> dict[str, str]:
        return {**self.deployment.env(), "MESA_API_KEY": self.token}


async def _setup(secured: SecuredDeployment, monkeypatch: pytest.MonkeyPatch) -> Mesa:
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    mesa = Mesa(org="acme", api_key=secured.api_key)
    for name in ("app", "secret"):
        await mesa.repos.create(name)
    async with mesa.fs.mount(repos=["secret"]) as fs:
        await fs.write("/acme/secret/s.txt", b"secret")
    return mesa


async def test_a_sandbox_token_mounts_its_repo_and_nothing_else(
    secured: SecuredDeployment, start_fuse: StartFuse, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesa = await _setup(secured, monkeypatch)
    try:
        token = mesa.tokens.create(repos=["app"], scopes=["read", "write"], ttl_seconds=600)
        holder = TokenHolder(secured, token.token)
        mount = start_fuse(holder, ("app",))  # type: ignore[arg-type]
        path = mount.repo / "notes.md"
        await asyncio.to_thread(path.write_bytes, b"from the sandbox\n")
        async with mesa.fs.mount(repos=["app"]) as fs:
            deadline = time.monotonic() + 10
            while (await fs.exists("/acme/app/notes.md")) is False:
                assert time.monotonic() < deadline, "the sandbox's write never arrived"
                await asyncio.sleep(0.05)
            assert await fs.read("/acme/app/notes.md") == b"from the sandbox\n"
        with pytest.raises(AssertionError, match="exited"):
            FuseMount.start(mount.mountpoint.parent / "other", holder, ("secret",))  # type: ignore[arg-type]
    finally:
        await mesa.transport.aclose()


async def test_a_read_only_sandbox_token_mounts_read_only(
    secured: SecuredDeployment, start_fuse: StartFuse, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesa = await _setup(secured, monkeypatch)
    try:
        token = mesa.tokens.create(repos=["secret"], scopes=["read"], ttl_seconds=600)
        mount = start_fuse(TokenHolder(secured, token.token), ("secret",))  # type: ignore[arg-type]
        target = mount.repo / "s.txt"
        assert await asyncio.to_thread(target.read_bytes) == b"secret"
        with pytest.raises(OSError, match=r"(?i)read.only") as info:
            await asyncio.to_thread(Path(target).write_bytes, b"overwritten")
        assert info.value.errno == errno.EROFS
    finally:
        await mesa.transport.aclose()

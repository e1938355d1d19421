"""``mesa keys`` and ``mesa tokens`` on the process's memory deployment (``memory://``)."""

from __future__ import annotations

import asyncio

import pytest

from mesa import _cli_keys, cli
from mesa._local import _memory
from mesa.errors import AuthenticationError, AuthorizationError
from mesa_sdk import Mesa
from transports.auth import key_id


@pytest.fixture(autouse=True)
def _memory_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESA_NATS_URL", "memory://")
    monkeypatch.delenv("MESA_API_KEY", raising=False)
    monkeypatch.delenv("MESA_ORG", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "keys" in _cli_keys.COMMANDS
    code, out, err = run(
        capsys, "keys", "create", "--org", "clikeys", "--name", "ci", "--scope", "read",
        "--repo", "app", "--expires-in", "600",
    )  # fmt: skip
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("mesa_")
    assert f"created {key_id(key)} scopes=read repos=app" in err
    code, out, err = run(capsys, "keys", "list", "--org", "clikeys")
    assert code == 0, err
    (line,) = out.splitlines()
    assert line.startswith(f"{key_id(key)}\tci\tread\tapp\texpires ")
    assert line.endswith("active")
    assert key not in out

    async def use() -> None:
        await Mesa(org="clikeys", api_key=key).repos.list()

    asyncio.run(use())
    code, out, err = run(capsys, "keys", "revoke", "--org", "clikeys", key_id(key))
    assert (code, out) == (0, f"revoked {key_id(key)}\n")
    with pytest.raises(AuthenticationError, match="revoked"):
        asyncio.run(use())
    code, out, _ = run(capsys, "keys", "list", "--org", "clikeys")
    assert out.rstrip().endswith("revoked")
    code, _, err = run(capsys, "keys", "revoke", "--org", "clikeys", "mk0000000000000000")
    assert code == 1
    assert "no key" in err


def test_tokens_create(capsys: pytest.CaptureFixture[str]) -> None:
    transport, _, admin = _memory()
    assert admin is not None

    async def setup() -> None:
        await Mesa(org="clitok", api_key=admin, transport=transport).repos.create("app")

    asyncio.run(setup())
    code, out, err = run(capsys, "tokens", "create", "--org", "clitok", "--repo", "app",
                         "--read-only", "--ttl", "60")  # fmt: skip
    assert code == 0, err
    token = out.strip()

    async def write() -> None:
        sandbox = Mesa(org="clitok", api_key=token)
        async with sandbox.fs.mount(repos=["app"]) as fs:
            assert not await fs.exists("/clitok/app/x")
            with pytest.raises(OSError, match="Read-only"):
                await fs.write("/clitok/app/x", b"x")
        with pytest.raises(AuthorizationError):
            await sandbox.repos.create("other")

    asyncio.run(write())
    code, _, err = run(capsys, "tokens", "create", "--org", "clitok", "--repo", "app",
                       "--ttl", "0")  # fmt: skip
    assert code == 2
    assert "ttl_seconds" in err


def test_a_key_that_is_not_admin_cannot_create_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "keys", "create", "--org", "clinoadm")
    monkeypatch.setenv("MESA_API_KEY", out.strip())
    code, _, err = run(capsys, "keys", "create", "--org", "clinoadm")
    assert code == 1
    assert "admin" in err

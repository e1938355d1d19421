"""An operator's path with the CLI: init, include the block, run the service, first key.

Nothing here uses the embedded default: a plain nats-server includes the block `mesa
service init` wrote, `mesa service run` serves beside it, `mesa service admin-key`
registers the first key, and an SDK client holding only that key works through the
auth callout.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mesa_sdk import Mesa
from tests.integration.conftest import ROOT
from tests.integration.natsutil import NatsServer, free_port

pytestmark = pytest.mark.integration


def _mesa(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESA_")}
    return subprocess.run(
        [sys.executable, "-m", "mesa.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_init_run_and_admin_key_make_a_working_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    secrets_dir = tmp_path / "mesa"
    init = _mesa("service", "init", str(secrets_dir), "--server", url)
    assert init.returncode == 0, init.stderr
    for name in ("service.creds", "nats-auth.conf"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
    again = _mesa("service", "init", str(secrets_dir), "--server", url)
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert "Traceback" not in again.stderr

    server = NatsServer(tmp_path / "nats", sync_always=True)
    server.port = port
    # nats-server resolves an include relative to its config file, absolute or not.
    (server.workdir / "nats-auth.conf").write_bytes((secrets_dir / "nats-auth.conf").read_bytes())
    server.extra_config = 'include "nats-auth.conf"\n'
    server.start()
    service = subprocess.Popen(  # noqa: ASYNC220 (a long-running child, not awaited)
        [sys.executable, "-m", "mesa.cli", "service", "run", str(secrets_dir / "service.creds")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert service.stdout is not None
        assert service.stdout.readline().strip() == b"ready"
        made = _mesa("service", "admin-key", str(secrets_dir / "service.creds"), "--org", "acme")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert key.startswith("mesa_")
        monkeypatch.setenv("MESA_NATS_URL", url)
        mesa = Mesa(org="acme", api_key=key)
        try:
            await mesa.repos.create("app")
            async with mesa.fs.mount(repos=["app"]) as fs:
                await fs.write("/acme/app/hello.txt", b"hi")
                assert await fs.read("/acme/app/hello.txt") == b"hi"
            # The key is of org acme only: another org is refused by the server side.
            other = Mesa(org="other", api_key=key)
            from mesa.errors import AuthenticationError

            with pytest.raises(AuthenticationError):
                await other.repos.create("x")
        finally:
            await mesa.transport.aclose()
    finally:
        service.terminate()
        service.wait(10)
        for stream in (service.stdout, service.stderr):
            if stream is not None:
                stream.close()
        server.kill()

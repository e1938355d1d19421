"""The embedded default server: one per host, started on demand, durable, loopback only."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesa import MesaConnectionError, server
from tests.integration.natsutil import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "mesa-home"
    yield home
    server.stop(home)


def test_start_reuse_status_stop(home: Path) -> None:
    first = server.ensure_running(home)
    second = server.ensure_running(home)
    assert second.pid == first.pid
    assert second.url == first.url
    assert first.url.startswith("nats://127.0.0.1:")
    status = server.status(home)
    assert status is not None
    assert status.pid == first.pid
    assert server.stop(home) is True
    assert server.status(home) is None
    assert server.stop(home) is False


def test_admin_key_and_config_are_private(home: Path) -> None:
    info = server.ensure_running(home)
    for name in ("admin.key", "nats.conf"):
        mode = stat.S_IMODE((home / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    assert (home / "admin.key").read_text().strip() == info.admin_key
    assert info.admin_key not in repr(info)


def test_server_fsyncs_every_write_and_listens_on_loopback(home: Path) -> None:
    info = server.ensure_running(home)
    with urllib.request.urlopen(info.http_url + "/varz", timeout=5) as response:
        varz = json.load(response)
    assert varz["jetstream"]["config"]["sync_always"] is True
    assert varz["host"] == "127.0.0.1"
    assert varz["auth_required"] is True


def test_two_processes_starting_at_once_share_one_server(home: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from mesa import server; "
        "print(server.ensure_running(Path(sys.argv[1])).pid)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    pids = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(pids) == 1, pids
    (pid,) = pids
    os.kill(int(pid), 0)  # alive


def test_restart_after_the_server_died(home: Path) -> None:
    first = server.ensure_running(home)
    os.kill(first.pid, 9)
    second = server.ensure_running(home)
    assert second.pid != first.pid
    assert second.url == first.url
    assert server.status(home) is not None


def test_the_foreground_server_listens_where_told_and_that_becomes_the_address(
    home: Path,
) -> None:
    background = server.ensure_running(home)
    assert server.stop(home)
    port, http_port = free_port(), free_port()
    env = {**os.environ, "MESA_HOME": str(home)}
    env.pop("MESA_NATS_URL", None)
    argv = ["server", "--port", str(port), "--http-port", str(http_port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesa.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while (info := server.status(home)) is None:
            assert proc.poll() is None, "mesa server exited"
            assert time.monotonic() < deadline, "mesa server did not start"
            time.sleep(0.1)
        assert info.url == f"nats://127.0.0.1:{port}" != background.url
        assert server.recorded_ports(home) == (port, http_port)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert server.status(home) is None
    assert server.ensure_running(home).url == f"nats://127.0.0.1:{port}"


def test_the_foreground_server_without_port_keeps_the_homes_address(home: Path) -> None:
    background = server.ensure_running(home)
    assert server.stop(home)
    env = {**os.environ, "MESA_HOME": str(home)}
    env.pop("MESA_NATS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesa.cli", "server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while (info := server.status(home)) is None:
            assert proc.poll() is None, "mesa server exited"
            assert time.monotonic() < deadline, "mesa server did not start"
            time.sleep(0.1)
        assert info.url == background.url  # not 4222: clients of the home reconnect
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_a_home_from_before_ports_json_keeps_the_port_of_its_config(home: Path) -> None:
    # An older mesa wrote the ports of each start into nats.conf, and no ports.json.
    port, http_port = free_port(), free_port()
    server.write_config(home, server.admin_key(home), port, http_port)
    assert server.ensure_running(home).url == f"nats://127.0.0.1:{port}"
    assert server.recorded_ports(home) == (port, http_port)


def test_an_unreadable_address_record_is_a_clear_error(home: Path) -> None:
    server.ensure_running(home)
    assert server.stop(home)
    (home / server.PORTS_FILE).write_text("{not json")
    with pytest.raises(MesaConnectionError, match=server.PORTS_FILE):
        server.ensure_running(home)
    assert server.status(home) is None

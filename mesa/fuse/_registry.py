"""Where a running ``mesa mount`` says who serves a mount point and how it ended.

Each mount process writes ``$MESA_HOME/mounts/<key>.json`` (key: a hash of the mount
point) when it is mounted: its pid, the mount point, its log file, its org and, per
repo, the change it serves and the bookmark it follows (rewritten after every switch
to another change, e.g. when the followed bookmark moved); and, when it stops serving,
the outcome: the writes it could not publish (path and reason). ``mesa unmount`` reads
it to wait for the process to finish draining its write-behind queue and to report,
with a non-zero exit, every write that did not reach the log; ``mesa status`` reads
the live ones (`live`) to say which change each mount serves.
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
class MountedRepo:
    """One repo of a mount as its record states it: the change it serves now."""

    name: str
    change_id: str
    #: The bookmark the mount follows (it switches when the bookmark moves), or None.
    bookmark: str | None = None
    read_only: bool = False

    def to_json(self) -> dict[str, Any]:
        """The repo as JSON values."""
        return {
            "name": self.name,
            "change_id": self.change_id,
            "bookmark": self.bookmark,
            "read_only": self.read_only,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MountedRepo:
        """The repo from its JSON values (KeyError, TypeError or ValueError if malformed)."""
        bookmark = data.get("bookmark")
        return cls(
            str(data["name"]),
            str(data["change_id"]),
            None if bookmark is None else str(bookmark),
            bool(data.get("read_only", False)),
        )


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
    #: The org mounted, and its repos (None and empty in records of an older mesafs).
    org: str | None = None
    repos: list[MountedRepo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values."""
        return {
            "pid": self.pid,
            "mountpoint": self.mountpoint,
            "log_file": self.log_file,
            "finished": self.finished,
            "lost": self.lost,
            "drain_s": self.drain_s,
            "org": self.org,
            "repos": [r.to_json() for r in self.repos],
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
    return _load(record_path(mountpoint))


def _load(path: Path) -> MountRecord | None:
    try:
        data = json.loads(path.read_text())
        org = data.get("org")
        return MountRecord(
            int(data["pid"]),
            str(data["mountpoint"]),
            data.get("log_file"),
            bool(data.get("finished", False)),
            [dict(x) for x in data.get("lost", [])],
            float(data.get("drain_s", 120.0)),
            None if org is None else str(org),
            [MountedRepo.from_json(r) for r in data.get("repos", [])],
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def live() -> list[MountRecord]:
    """The records of mount processes still serving, by mount point.

    A record whose process died without finishing (SIGKILL) is not live: its mount
    point is a dead FUSE mount until ``mesa unmount`` clears it.
    """
    found = []
    for path in sorted(_dir().glob("*.json")):
        record = _load(path)
        if record is not None and not record.finished and alive(record.pid):
            found.append(record)
    return sorted(found, key=lambda r: r.mountpoint)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has exited; another user's process runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours (the test harness may be the parent) has exited.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def remove(mountpoint: str) -> None:
    """Forget the record of ``mountpoint``."""
    with contextlib.suppress(FileNotFoundError):
        record_path(mountpoint).unlink()

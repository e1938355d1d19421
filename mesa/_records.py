"""Repo, bookmark and change records as stored in the transport's KV store.

Keys: ``<org>.<repo>.repo``, ``<org>.<repo>.change.<change_id>`` and
``<org>.<repo>.bookmark.<name as urlsafe base64>`` (bookmark names may hold ``/``
and ``.``, which KV keys may not). Values are JSON objects; unknown fields are
kept so newer writers do not lose data through older readers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from engine.fold import DEFAULT_WINDOW_MS
from engine.ids import ROOT_CHANGE_ID

DEFAULT_RACE_WINDOW_MS = DEFAULT_WINDOW_MS


def repo_key(org: str, repo: str) -> str:
    """Return the KV key of a repo record."""
    return f"{org}.{repo}.repo"


def change_key(org: str, repo: str, change_id: str) -> str:
    """Return the KV key of a change record."""
    return f"{org}.{repo}.change.{change_id}"


def bookmark_key(org: str, repo: str, name: str) -> str:
    """Return the KV key of a bookmark record."""
    encoded = base64.urlsafe_b64encode(name.encode()).decode()
    return f"{org}.{repo}.bookmark.{encoded}"


def snapshot_key(org: str, repo: str, change_id: str) -> str:
    """Return the KV key of a change's newest snapshot record."""
    return f"{org}.{repo}.snapshot.{change_id}"


def bookmark_name_from_key(key: str) -> str:
    """Return the bookmark name a bookmark key encodes."""
    return base64.urlsafe_b64decode(key.rsplit(".", 1)[1].encode()).decode()


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _load(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("record is not a JSON object")
    return data


@dataclass(frozen=True)
class RepoRecord:
    """A repository: name, default bookmark, creation time and race window.

    The race window is the repo's, not a client's: every replica of a change must
    fold with the same window or they would not converge.
    """

    name: str
    default_bookmark: str
    created_at_ms: int
    race_window_ms: int = DEFAULT_RACE_WINDOW_MS

    def encode(self) -> bytes:
        """Serialize to JSON bytes."""
        return _dump(
            {
                "name": self.name,
                "default_bookmark": self.default_bookmark,
                "created_at_ms": self.created_at_ms,
                "race_window_ms": self.race_window_ms,
            }
        )

    @staticmethod
    def decode(raw: bytes) -> RepoRecord:
        """Parse JSON bytes."""
        data = _load(raw)
        return RepoRecord(
            str(data["name"]),
            str(data["default_bookmark"]),
            int(data["created_at_ms"]),
            int(data.get("race_window_ms", DEFAULT_RACE_WINDOW_MS)),
        )


@dataclass(frozen=True)
class ChangeRecord:
    """A change: its id, parent change ids, message, author and creation time."""

    change_id: str
    parents: tuple[str, ...] = (ROOT_CHANGE_ID,)
    message: str = ""
    author: str = ""
    created_at_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Serialize to JSON bytes."""
        return _dump(
            {
                **self.extra,
                "id": self.change_id,
                "parents": list(self.parents),
                "message": self.message,
                "author": self.author,
                "created_at_ms": self.created_at_ms,
            }
        )

    @staticmethod
    def decode(raw: bytes) -> ChangeRecord:
        """Parse JSON bytes."""
        data = _load(raw)
        known = {"id", "parents", "message", "author", "created_at_ms"}
        return ChangeRecord(
            change_id=str(data["id"]),
            parents=tuple(str(p) for p in data["parents"]),
            message=str(data.get("message", "")),
            author=str(data.get("author", "")),
            created_at_ms=int(data.get("created_at_ms", 0)),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class BookmarkRecord:
    """A bookmark: a name pointing at a change."""

    name: str
    change_id: str

    def encode(self) -> bytes:
        """Serialize to JSON bytes."""
        return _dump({"name": self.name, "change_id": self.change_id})

    @staticmethod
    def decode(raw: bytes) -> BookmarkRecord:
        """Parse JSON bytes."""
        data = _load(raw)
        return BookmarkRecord(str(data["name"]), str(data["change_id"]))


@dataclass(frozen=True)
class SnapshotRecord:
    """Where a change's newest snapshot is: the folded state after ``seq`` as a blob.

    ``entries`` counts the change's log entries folded into it (sequences of one
    change are not contiguous, so the count is kept here).
    """

    seq: int
    entries: int
    digest: str
    size: int
    created_at_ms: int

    def encode(self) -> bytes:
        """Serialize to JSON bytes."""
        return _dump(
            {
                "seq": self.seq,
                "entries": self.entries,
                "digest": self.digest,
                "size": self.size,
                "created_at_ms": self.created_at_ms,
            }
        )

    @staticmethod
    def decode(raw: bytes) -> SnapshotRecord:
        """Parse JSON bytes."""
        data = _load(raw)
        return SnapshotRecord(
            int(data["seq"]),
            int(data["entries"]),
            str(data["digest"]),
            int(data["size"]),
            int(data["created_at_ms"]),
        )

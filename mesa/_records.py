"""Repo, bookmark, change and snapshot records as stored in the transport's KV store.

Keys: ``<org>.<repo>.repo``, ``<org>.<repo>.change.<change_id>``,
``<org>.<repo>.bookmark.<name as urlsafe base64>`` (bookmark names may hold ``/``
and ``.``, which KV keys may not), ``<org>.<repo>.snapshot.<change_id>`` (the newest
snapshot) and ``<org>.<repo>.snapat.<change_id>.<seq, 20 digits>`` (every snapshot,
for reads of the past). Values are JSON objects; unknown fields are kept so newer
writers do not lose data through older readers.

A bookmark also has a **channel**: a log in the repo's stream whose id is derived
from the bookmark's name (`bookmark_channel`). Whoever moves or deletes a bookmark
appends a small JSON notice there after the compare-and-set succeeded, so mounts that
follow the bookmark learn of it at once; the KV record stays the truth (a follower
re-reads it on every notice).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from engine.fold import DEFAULT_WINDOW_MS
from engine.ids import ROOT_CHANGE_ID, change_id_from_bytes
from transports.base import LogId

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


def snapshot_at_key(org: str, repo: str, change_id: str, seq: int) -> str:
    """Return the KV key recording the snapshot of a change at ``seq``."""
    return f"{snapshot_at_prefix(org, repo, change_id)}{seq:020d}"


def snapshot_at_prefix(org: str, repo: str, change_id: str) -> str:
    """Return the prefix of the keys of every recorded snapshot of a change."""
    return f"{org}.{repo}.snapat.{change_id}."


def changes_prefix(org: str, repo: str) -> str:
    """Return the prefix of the keys of every change record of a repo."""
    return f"{org}.{repo}.change."


def bookmarks_prefix(org: str, repo: str) -> str:
    """Return the prefix of the keys of every bookmark record of a repo."""
    return f"{org}.{repo}.bookmark."


def repo_prefix(org: str, repo: str) -> str:
    """Return the prefix of every KV key of a repo (its records and its snapshots')."""
    return f"{org}.{repo}."


def bookmark_channel(org: str, repo: str, name: str) -> LogId:
    """Return the log where moves of bookmark ``name`` are announced (module docstring).

    Its id has the shape of a change id (the first 16 bytes of a hash of the name), so
    it lives in the repo's stream like a change's log; no change has that id.
    """
    raw = hashlib.sha256(b"mesa-bookmark-channel\0" + name.encode()).digest()[:16]
    return LogId(org, repo, change_id_from_bytes(raw))


def encode_notice(name: str, change_id: str | None, revision: int) -> bytes:
    """Return a bookmark notice: ``name`` now points at ``change_id`` (None: deleted)."""
    return _dump({"bookmark": name, "change_id": change_id, "revision": revision})


def decode_notice(raw: bytes) -> tuple[str, str | None]:
    """Return (bookmark name, change id or None) of a notice; ValueError if malformed."""
    data = _load(raw)
    change = data.get("change_id")
    return str(data["bookmark"]), None if change is None else str(change)


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
class Seal:
    """A parent's folded state a change was forked from: the parent at ``seq``.

    ``digest`` names the snapshot blob of that state (empty for the root change).
    """

    change: str
    seq: int
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"change": self.change, "seq": self.seq, "digest": self.digest}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Seal:
        """Parse the JSON form."""
        return Seal(str(data["change"]), int(data["seq"]), str(data.get("digest", "")))


@dataclass(frozen=True)
class BaseRef:
    """Where a change's base tree is: a snapshot blob, and the parents' seals it came from.

    For one parent the blob is that parent's sealed state (its versions are dropped
    when it is loaded as a base); for a merge change it is the merged tree.
    """

    digest: str
    size: int
    seals: tuple[Seal, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "digest": self.digest,
            "size": self.size,
            "parents": [seal.to_json() for seal in self.seals],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> BaseRef:
        """Parse the JSON form."""
        return BaseRef(
            str(data["digest"]),
            int(data["size"]),
            tuple(Seal.from_json(item) for item in data.get("parents", ())),
        )

    def seal_of(self, parent: str) -> Seal | None:
        """Return the seal of ``parent``, or None."""
        return next((seal for seal in self.seals if seal.change == parent), None)


@dataclass(frozen=True)
class ChangeRecord:
    """A change: id, parent change ids, message, author, times, and its base (if any).

    A change without a base has an empty base tree (the first change of a repo, a
    child of the root change).
    """

    change_id: str
    parents: tuple[str, ...] = (ROOT_CHANGE_ID,)
    message: str = ""
    author: str = ""
    created_at_ms: int = 0
    base: BaseRef | None = None
    updated_at_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Serialize to JSON bytes."""
        data: dict[str, Any] = {
            **self.extra,
            "id": self.change_id,
            "parents": list(self.parents),
            "message": self.message,
            "author": self.author,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms or self.created_at_ms,
        }
        if self.base is not None:
            data["base"] = self.base.to_json()
        return _dump(data)

    @staticmethod
    def decode(raw: bytes) -> ChangeRecord:
        """Parse JSON bytes."""
        data = _load(raw)
        known = {"id", "parents", "message", "author", "created_at_ms", "updated_at_ms", "base"}
        base = data.get("base")
        created = int(data.get("created_at_ms", 0))
        return ChangeRecord(
            change_id=str(data["id"]),
            parents=tuple(str(p) for p in data["parents"]),
            message=str(data.get("message", "")),
            author=str(data.get("author", "")),
            created_at_ms=created,
            base=BaseRef.from_json(base) if isinstance(base, dict) else None,
            updated_at_ms=int(data.get("updated_at_ms", created)),
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

"""File contents as values: inline bytes and content-addressed blob references.

A `Content` is a sequence of segments. Small bytes travel inline in log entries;
large ones are stored once as a blob (sha256 of the raw bytes) and referenced by
digest and size. Appends concatenate segments, so the fold never needs a blob's
bytes. Adjacent inline segments are always coalesced, so equal histories give equal
segment lists. Two contents compare equal when their `key` is equal: for a single
segment the key is the sha256 of the bytes, whether inline or blob.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def digest_of(data: bytes) -> str:
    """Return the content address of ``data``: its sha256 in lowercase hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Inline:
    """Bytes carried inside the log entry."""

    data: bytes

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    @property
    def digest(self) -> str:
        """The sha256 of the bytes."""
        return digest_of(self.data)


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Bytes stored once in the blob store, referenced by sha256 digest and size."""

    digest: str
    size: int


Segment = Inline | BlobRef


@dataclass(frozen=True, eq=False)
class Content:
    """An immutable file content made of segments (see module docstring)."""

    segments: tuple[Segment, ...] = ()
    _key: list[str] = field(default_factory=list, repr=False, compare=False)

    @staticmethod
    def of(data: bytes) -> Content:
        """Return the content made of ``data`` carried inline."""
        return Content((Inline(data),) if data else ())

    @staticmethod
    def from_segments(segments: tuple[Segment, ...] | list[Segment]) -> Content:
        """Return a normalized content: empty inline segments dropped, inline runs coalesced."""
        out: list[Segment] = []
        for seg in segments:
            if isinstance(seg, Inline):
                if not seg.data:
                    continue
                if out and isinstance(out[-1], Inline):
                    out[-1] = Inline(out[-1].data + seg.data)
                    continue
            elif seg.size == 0:
                continue
            out.append(seg)
        return Content(tuple(out))

    @property
    def size(self) -> int:
        """Total size in bytes."""
        return sum(seg.size for seg in self.segments)

    @property
    def key(self) -> str:
        """The identity used for equality and hashing (see module docstring)."""
        if not self._key:
            if not self.segments:
                self._key.append(digest_of(b""))
            elif len(self.segments) == 1:
                self._key.append(self.segments[0].digest)
            else:
                joined = "+".join(seg.digest for seg in self.segments)
                self._key.append(digest_of(joined.encode()))
        return self._key[0]

    def inline_bytes(self) -> bytes | None:
        """Return the bytes if every segment is inline, else None."""
        if all(isinstance(seg, Inline) for seg in self.segments):
            return b"".join(seg.data for seg in self.segments)  # type: ignore[union-attr]
        return None

    def blob_digests(self) -> list[str]:
        """Return the digests of the blob segments, in order."""
        return [seg.digest for seg in self.segments if isinstance(seg, BlobRef)]

    def concat(self, other: Content) -> Content:
        """Return this content followed by ``other``."""
        return Content.from_segments(self.segments + other.segments)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Content):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


EMPTY = Content()

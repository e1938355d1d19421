"""The simulated blob store: bytes by sha256, as the transports' blob stores keep them.

Contents larger than `engine.driver.INLINE_THRESHOLD_BYTES` go here before their
entry is appended (`engine.driver.goes_inline`), and so do the inline segments of an
entry the sequencer refused as too large (`engine.driver.spilled`). The fold never
reads blob bytes; the checkers do, through `bytes_of`, to follow tags and render
conflicts. A put is synchronous and never fails (blob faults are not simulated).
"""

from __future__ import annotations

from engine.content import BlobRef, Content, Inline, digest_of


class BlobStore:
    """Content-addressed bytes (see module docstring)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._data)

    def put(self, data: bytes) -> BlobRef:
        """Store ``data`` once; return its reference."""
        ref = BlobRef(digest_of(data), len(data))
        self._data.setdefault(ref.digest, data)
        return ref

    def bytes_of(self, content: Content) -> bytes:
        """Return a content's bytes, reading its blob segments.

        Raises:
            KeyError: a blob the store never held (a reference nobody put).
        """
        return b"".join(
            seg.data if isinstance(seg, Inline) else self._data[seg.digest]
            for seg in content.segments
        )

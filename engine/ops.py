"""The op model: every file operation that can be a log entry.

An `Entry` is what an author appends: an op, the author (mount id), the author's
op counter (author + counter is the op id, unique in the log) and ``seen``, the
last sequence of this change the author had folded when it issued the op (its
causal context). A `Logged` entry is an entry plus the sequence and the sequencer
timestamp the transport gave it. Paths in ops are real paths: the SDK resolves
symlinks before it issues an op, and the fold never follows a symlink.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.content import Content
from engine.ids import op_id
from engine.paths import RelPath

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
SYMLINK_MODE = 0o777
MODE_MASK = 0o7777


@dataclass(frozen=True, slots=True)
class Write:
    """Replace a file's content, creating it (with ``mode``) if missing.

    ``terms`` is empty for a plain write. For a **write-back** (docs/conflicts.md,
    rule 6: the bytes are the conflict block the writer read, markers intact) it holds
    the conflict's terms as the writer's mount parsed them from ``content``, in
    rendering order (side, base, side, ..., side: an odd number, at least 3). The fold
    never reads blobs, so it cannot parse ``content`` itself when it is one; it keeps
    the conflict with these terms, or takes ``content`` as plain bytes when the file
    is not the conflict of that many sides when the entry is folded.
    """

    path: RelPath
    content: Content
    mode: int = DEFAULT_FILE_MODE
    terms: tuple[Content, ...] = ()


@dataclass(frozen=True, slots=True)
class Append:
    """Append to a file, creating it (with ``mode``) if missing. Never conflicts."""

    path: RelPath
    content: Content
    mode: int = DEFAULT_FILE_MODE


@dataclass(frozen=True, slots=True)
class Mkdir:
    """Create a directory; with ``parents`` also its missing ancestors."""

    path: RelPath
    mode: int = DEFAULT_DIR_MODE
    parents: bool = False


@dataclass(frozen=True, slots=True)
class Rm:
    """Remove a file, symlink or directory (``recursive`` for a non-empty one)."""

    path: RelPath
    recursive: bool = False


@dataclass(frozen=True, slots=True)
class Mv:
    """Rename ``src`` to ``dst`` with rename(2) semantics."""

    src: RelPath
    dst: RelPath


@dataclass(frozen=True, slots=True)
class Cp:
    """Copy ``src`` to ``dst`` (a directory only with ``recursive``); symlinks stay symlinks."""

    src: RelPath
    dst: RelPath
    recursive: bool = False


@dataclass(frozen=True, slots=True)
class Chmod:
    """Set the permission bits of a file or directory."""

    path: RelPath
    mode: int


@dataclass(frozen=True, slots=True)
class Symlink:
    """Create a symlink at ``path`` whose target is stored verbatim."""

    path: RelPath
    target: str


@dataclass(frozen=True, slots=True)
class Utimes:
    """Set access and modification times, in milliseconds since the epoch."""

    path: RelPath
    atime_ms: int
    mtime_ms: int


@dataclass(frozen=True, slots=True)
class SetMetadata:
    """Set or delete metadata keys of a file, directory or symlink (engine/metadata.py).

    ``items`` are (key, value) pairs in strictly increasing key order; a value of None
    deletes the key. With ``clear``, every other key the node holds is deleted too.
    """

    path: RelPath
    items: tuple[tuple[str, str | None], ...]
    clear: bool = False


Op = Write | Append | Mkdir | Rm | Mv | Cp | Chmod | Symlink | Utimes | SetMetadata


@dataclass(frozen=True, slots=True)
class Entry:
    """One log record as its author issued it (see module docstring).

    ``legacy_writeback`` marks an entry decoded from codec version 1, written before
    write-backs carried their terms (`Write.terms`): the fold then finds a write-back
    as version 1 did, by parsing the written bytes when they are inline, so a log
    replays to the tree the mounts of that version folded.
    """

    op: Op
    author: str
    counter: int
    seen: int
    legacy_writeback: bool = field(default=False, kw_only=True)

    @property
    def op_id(self) -> str:
        """The op id: author and counter, unique in the log."""
        return op_id(self.author, self.counter)


@dataclass(frozen=True, slots=True)
class Logged:
    """An entry placed in the log: its sequence and the sequencer's timestamp."""

    seq: int
    time_ms: int
    entry: Entry


def touched_paths(op: Op) -> tuple[RelPath, ...]:
    """Return the paths an op names, in argument order."""
    if isinstance(op, Mv | Cp):
        return (op.src, op.dst)
    return (op.path,)

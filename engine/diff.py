"""Differences between two folded trees: structured entries and a unified patch.

`diff_trees(old, new)` compares the files and symlinks of two trees path by path
(directories are containers, not entries: an empty directory is not reported, as in
git). A path is ``added`` or ``deleted`` when only one tree has it, ``modified`` when
both have it but its kind, mode, value or symlink target differ; times alone are not
a difference. A file whose new value is a conflict is flagged ``is_conflicted``.

`render_patch` turns entries into a git-style unified patch. Contents are bytes the
caller fetched (blobs live outside the engine): for a conflicted file they are its
materialized jj block, so the markers appear inline in the patch; for a symlink they
are its target. A file with a NUL byte is reported as binary, without hunks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from engine.merge import Merge
from engine.paths import RelPath, to_str
from engine.tree import AnyNode, DirNode, FileNode, Tree, merge_key

Status = Literal["added", "modified", "deleted"]
Kind = Literal["file", "symlink"]

SYMLINK_GIT_MODE = 0o120000
FILE_GIT_MODE = 0o100000
CONTEXT_LINES = 3
#: How far into a file a NUL byte is looked for to call it binary (as git does).
BINARY_SNIFF_BYTES = 8000


@dataclass(frozen=True)
class Side:
    """One side of a diff entry: a file (value, mode) or a symlink (target)."""

    kind: Kind
    mode: int
    value: Merge | None = None
    target: str | None = None

    @property
    def git_mode(self) -> int:
        """The mode as git prints it (``100644``, ``100755``, ``120000``)."""
        if self.kind == "symlink":
            return SYMLINK_GIT_MODE
        return FILE_GIT_MODE | (self.mode & 0o777)

    @property
    def is_conflicted(self) -> bool:
        """Whether this side is a file holding a conflict."""
        return self.value is not None and not self.value.is_resolved()

    def same_as(self, other: Side) -> bool:
        """Whether a reader sees no difference between the two sides (times aside)."""
        if self.kind != other.kind or self.mode != other.mode:
            return False
        if self.kind == "symlink":
            return self.target == other.target
        assert self.value is not None
        assert other.value is not None
        return merge_key(self.value) == merge_key(other.value)


@dataclass(frozen=True)
class DiffEntry:
    """A path that differs between two trees."""

    path: RelPath
    status: Status
    old: Side | None
    new: Side | None

    @property
    def is_conflicted(self) -> bool:
        """Whether the path holds a conflict in the new tree."""
        return self.new is not None and self.new.is_conflicted


@dataclass(frozen=True)
class PatchFile:
    """An entry with the bytes of both sides (empty for a missing side)."""

    entry: DiffEntry
    old: bytes
    new: bytes


def leaves(tree: Tree) -> Iterator[tuple[RelPath, Side]]:
    """Yield every file and symlink of ``tree`` with its side, in sorted path order."""
    for path, node in tree.walk():
        side = _side(node)
        if side is not None:
            yield path, side


def conflicted_paths(tree: Tree) -> list[RelPath]:
    """Return the paths of the conflicted files of ``tree``, sorted."""
    return [
        path
        for path, node in tree.walk()
        if isinstance(node, FileNode) and not node.value.is_resolved()
    ]


def diff_trees(old: Tree, new: Tree) -> list[DiffEntry]:
    """Return the entries that differ from ``old`` to ``new``, sorted by path."""
    before = dict(leaves(old))
    after = dict(leaves(new))
    entries: list[DiffEntry] = []
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is None:
            entries.append(DiffEntry(path, "added", None, b))
        elif b is None:
            entries.append(DiffEntry(path, "deleted", a, None))
        elif not a.same_as(b):
            entries.append(DiffEntry(path, "modified", a, b))
    return entries


def is_binary(data: bytes) -> bool:
    """Whether ``data`` looks binary (a NUL byte near its start)."""
    return b"\0" in data[:BINARY_SNIFF_BYTES]


def line_counts(old: bytes, new: bytes) -> tuple[int, int]:
    """Return (lines added, lines deleted) from ``old`` to ``new``; (0, 0) for binary."""
    if is_binary(old) or is_binary(new):
        return 0, 0
    added = deleted = 0
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            deleted += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, deleted


def render_patch(files: Sequence[PatchFile]) -> bytes:
    """Render ``files`` as one git-style unified patch (see module docstring).

    A path whose kind changed (file to symlink or back) is rendered as a deletion
    followed by an addition, as git does.
    """
    out: list[bytes] = []
    for item in files:
        entry = item.entry
        old, new = entry.old, entry.new
        if old is not None and new is not None and old.kind != new.kind:
            out.extend(_render_one(entry.path, old, None, item.old, b""))
            out.extend(_render_one(entry.path, None, new, b"", item.new))
        else:
            out.extend(_render_one(entry.path, old, new, item.old, item.new))
    return b"".join(out)


def _render_one(
    path: RelPath, old: Side | None, new: Side | None, old_bytes: bytes, new_bytes: bytes
) -> list[bytes]:
    name = to_str(path).encode("utf-8", "surrogateescape")
    out = [b"diff --git a/" + name + b" b/" + name + b"\n"]
    if old is None and new is not None:
        out.append(b"new file mode %o\n" % new.git_mode)
    elif new is None and old is not None:
        out.append(b"deleted file mode %o\n" % old.git_mode)
    elif old is not None and new is not None and old.git_mode != new.git_mode:
        out.append(b"old mode %o\nnew mode %o\n" % (old.git_mode, new.git_mode))
    if old_bytes == new_bytes:
        return out
    from_name = b"/dev/null" if old is None else b"a/" + name
    to_name = b"/dev/null" if new is None else b"b/" + name
    if is_binary(old_bytes) or is_binary(new_bytes):
        out.append(b"Binary files " + from_name + b" and " + to_name + b" differ\n")
        return out
    lines = difflib.diff_bytes(
        difflib.unified_diff,
        old_bytes.splitlines(keepends=True),
        new_bytes.splitlines(keepends=True),
        from_name,
        to_name,
        n=CONTEXT_LINES,
    )
    for index, line in enumerate(lines):
        if index < 2:
            # diff_bytes separates the file name from a (here empty) date by a tab.
            line = line.rstrip(b"\n").rstrip(b"\t") + b"\n"
        out.append(line)
        if not line.endswith(b"\n"):
            out.append(b"\n\\ No newline at end of file\n")
    return out


def _side(node: AnyNode) -> Side | None:
    if isinstance(node, DirNode):
        return None
    if isinstance(node, FileNode):
        return Side("file", node.mode, value=node.value)
    return Side("symlink", node.mode, target=node.target)

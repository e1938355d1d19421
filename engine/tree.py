"""The folded tree of one change: directories, files and symlinks.

A file's value is a `Merge` (resolved, or a first-class conflict). Each file keeps a
short list of recent `Version` stamps (who changed it, when, at which sequence, and
the value before), which the fold needs to decide races and to find the base a
racing author had seen; it is state, not user-visible, and is excluded from the
tree hash. A version whose ``before`` is None means the file did not exist before
it, or that what was there is not known (the oldest kept version is such a stub
once older ones are dropped; a move strips the values of what it carries): either
way a racing author's base is empty, which cancels no side, rather than a guess.

Every node may carry metadata (``meta``): keys mapped to `MetaSlot`s, each a value
(a `Merge` of UTF-8 bytes, so racing sets keep both values) and that key's own recent
versions, which decide races per key as a file's versions decide them for its
content. ``meta`` is None when the node has no key; a node's mapping is never
mutated in place (the fold replaces it), so clones and snapshots may share it.
Metadata is observable, so it is part of the tree hash (a node without any key
hashes exactly as before metadata existed).

Inode numbers are assigned from a counter in log order, so they are deterministic
and stable for the life of a node (a rename keeps its inode).

The tree is mutated in place by the fold (copying a 100k-entry tree per entry is
not affordable); `clone` gives an independent copy where a caller needs one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.merge import Merge
from engine.paths import RelPath

ROOT_INO = 1
#: Versions kept per file, plus one stub (bounds memory and the race check on hot files).
MAX_VERSIONS = 64


@dataclass(frozen=True, slots=True)
class Version:
    """One change of a node: sequence, sequencer time, author, and the value before it."""

    seq: int
    time_ms: int
    author: str
    before: Merge | None


@dataclass(frozen=True, slots=True)
class MetaSlot:
    """One metadata key of a node: its value (never absent) and its recent versions."""

    value: Merge
    versions: tuple[Version, ...] = ()

    def value_at(self, seen: int) -> Merge | None:
        """Return the key's value once sequence ``seen`` was folded (None: not known).

        As `FileNode.value_at`: None also when the key did not exist then.
        """
        for version in self.versions:
            if version.seq > seen:
                return version.before
        return self.value


#: A node's metadata: key -> slot. Replaced, never mutated in place.
Meta = dict[str, MetaSlot]


@dataclass(eq=False, slots=True)
class Node:
    """Fields every node has."""

    ino: int
    mode: int
    mtime_ms: int
    atime_ms: int
    versions: list[Version] = field(default_factory=list)
    meta: Meta | None = None


@dataclass(eq=False, slots=True)
class FileNode(Node):
    """A regular file whose value may be a conflict."""

    value: Merge = field(default_factory=lambda: Merge.resolved(None))

    def value_at(self, seen: int) -> Merge | None:
        """Return the value this file had once sequence ``seen`` was folded.

        None means the file did not exist, or that the value is no longer known: the
        versions that would answer were dropped, or the file was moved here since
        (see module docstring). The fold then uses an empty base.
        """
        for version in self.versions:
            if version.seq > seen:
                return version.before
        return self.value


@dataclass(eq=False, slots=True)
class DirNode(Node):
    """A directory."""

    children: dict[str, AnyNode] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class SymlinkNode(Node):
    """A symbolic link; ``target`` is stored verbatim."""

    target: str = ""


AnyNode = FileNode | DirNode | SymlinkNode


class Tree:
    """A change's folded tree rooted at a directory (see module docstring)."""

    def __init__(self, root: DirNode | None = None, next_ino: int = ROOT_INO + 1) -> None:
        self.root = (
            root if root is not None else DirNode(ino=ROOT_INO, mode=0o755, mtime_ms=0, atime_ms=0)
        )
        self.next_ino = next_ino

    def new_ino(self) -> int:
        """Return a fresh inode number."""
        ino = self.next_ino
        self.next_ino += 1
        return ino

    def lookup(self, path: RelPath) -> AnyNode | None:
        """Return the node at ``path`` without following symlinks, or None."""
        node: AnyNode = self.root
        for name in path:
            if not isinstance(node, DirNode):
                return None
            child = node.children.get(name)
            if child is None:
                return None
            node = child
        return node

    def parent_of(self, path: RelPath) -> DirNode | None:
        """Return the directory that holds ``path``, or None if it is not a directory."""
        parent = self.lookup(path[:-1])
        return parent if isinstance(parent, DirNode) else None

    def walk(self) -> Iterator[tuple[RelPath, AnyNode]]:
        """Yield every (path, node) in sorted depth-first order, the root first."""
        stack: list[tuple[RelPath, AnyNode]] = [((), self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if isinstance(node, DirNode):
                names = sorted(node.children, reverse=True)
                stack.extend(((*path, name), node.children[name]) for name in names)

    def file_count(self) -> int:
        """Return how many non-directory nodes the tree holds."""
        return sum(1 for _, node in self.walk() if not isinstance(node, DirNode))

    def hash(self) -> str:
        """Return the structural hash of what a reader can observe.

        Covers kinds, names, modes, times, symlink targets, file values (sides and
        bases of conflicts, by content key) and metadata values; excludes inode
        numbers and versions.
        """
        return _tree_digest(self.root).hex()

    def clone(self) -> Tree:
        """Return an independent deep copy (contents are immutable and shared)."""
        return Tree(_clone(self.root), self.next_ino)


def _tree_digest(root: DirNode) -> bytes:
    """Return the digest of ``root``'s subtree, walked with an explicit stack.

    A directory's digest covers its head, then each child's name and digest in sorted
    order; a frame per directory being hashed holds its sorted names still to feed.
    """
    frames: list[tuple[Iterator[str], DirNode, hashlib._Hash]] = [
        (iter(sorted(root.children)), root, _dir_hasher(root))
    ]
    while True:
        names, directory, h = frames[-1]
        for name in names:
            child = directory.children[name]
            encoded = name.encode("utf-8", "surrogateescape")
            h.update(b"\0%d:" % len(encoded) + encoded)
            if isinstance(child, DirNode):
                frames.append((iter(sorted(child.children)), child, _dir_hasher(child)))
                break
            h.update(_leaf_digest(child))
        else:
            frames.pop()
            digest = h.digest()
            if not frames:
                return digest
            frames[-1][2].update(digest)


def _dir_hasher(node: DirNode) -> hashlib._Hash:
    head = b"d%o:%d:%d" % (node.mode, node.mtime_ms, node.atime_ms)
    return hashlib.sha256(head + meta_key(node.meta))


def _leaf_digest(node: FileNode | SymlinkNode) -> bytes:
    if isinstance(node, FileNode):
        head = b"f%o:%d:%d" % (node.mode, node.mtime_ms, node.atime_ms)
        data = head + merge_key(node.value).encode() + meta_key(node.meta)
        return hashlib.sha256(data).digest()
    target = node.target.encode("utf-8", "surrogateescape")
    head = b"l%d:%d:" % (node.mtime_ms, node.atime_ms)
    return hashlib.sha256(head + target + meta_key(node.meta)).digest()


def meta_key(meta: Meta | None) -> bytes:
    """Return bytes identifying a node's metadata values; empty when it has none.

    Empty for no metadata, so trees without any hash as they did before metadata.
    Keys are sorted and length-prefixed (they hold no NUL or ``/``).
    """
    if not meta:
        return b""
    return b"\0m" + b"".join(
        b"%d:%s=%s;" % (len(key), key.encode(), merge_key(meta[key].value).encode())
        for key in sorted(meta)
    )


def merge_key(merge: Merge) -> str:
    """Return a string identifying a merge's terms (order-sensitive)."""
    adds = ",".join("-" if v is None else v.key for v in merge.adds)
    removes = ",".join("-" if v is None else v.key for v in merge.removes)
    return f"+{adds}/-{removes}"


def _clone(root: DirNode) -> DirNode:
    """Return a deep copy of ``root``'s subtree, walked with an explicit stack."""
    copy = _clone_node(root)
    assert isinstance(copy, DirNode)
    # Each frame: an original directory and its copy, whose children are still to copy.
    stack: list[tuple[DirNode, DirNode]] = [(root, copy)]
    while stack:
        original, into = stack.pop()
        for name, child in original.children.items():
            child_copy = _clone_node(child)
            into.children[name] = child_copy
            if isinstance(child, DirNode):
                assert isinstance(child_copy, DirNode)
                stack.append((child, child_copy))
    return copy


def _clone_node(node: AnyNode) -> AnyNode:
    """Return a copy of ``node`` alone (a directory without its children)."""
    if isinstance(node, DirNode):
        return DirNode(
            ino=node.ino,
            mode=node.mode,
            mtime_ms=node.mtime_ms,
            atime_ms=node.atime_ms,
            versions=list(node.versions),
            meta=node.meta,
        )
    if isinstance(node, FileNode):
        return FileNode(
            ino=node.ino,
            mode=node.mode,
            mtime_ms=node.mtime_ms,
            atime_ms=node.atime_ms,
            versions=list(node.versions),
            meta=node.meta,
            value=node.value,
        )
    return SymlinkNode(
        ino=node.ino,
        mode=node.mode,
        mtime_ms=node.mtime_ms,
        atime_ms=node.atime_ms,
        versions=list(node.versions),
        meta=node.meta,
        target=node.target,
    )

"""Three-way merge of folded trees, and fresh base states for new changes.

``merge_trees(base, left, right)`` merges two trees that both descend from ``base``,
node by node, as jj merges commits:

- A node equal on both sides, or changed on one side only, takes that side.
- Two directories changed differently are merged name by name.
- Two files changed differently get the value ``left + (right - base)`` in jj's merge
  algebra (`engine.merge.Merge.plus_diff`): when the values agree, or one side left
  the value alone (only its mode or times changed), the value is resolved; otherwise
  it is a first-class conflict ``Merge((left, right), (base,))``, which reads back
  materialized exactly like a realtime race (side #1 = left, side #2 = right). A file
  absent from ``base`` is an add/add conflict with an empty base; a file one side
  deleted and the other modified is a modify/delete conflict with an empty side.
- A directory one side deleted and the other changed keeps what the other side
  changed inside it (a deleted side cancels only what it had seen unchanged); it goes
  away only when nothing is left in it.
- Kinds clash (a file on one side, a directory or symlink on the other; or two
  different symlink targets): the left node keeps its name and the right one is
  placed beside it at ``<name>.conflict-<n>`` (smallest free n), as the fold's rule
  13 does (docs/conflicts.md). Nothing is lost.
- Metadata is merged key by key with the same algebra: a key changed on one side
  only takes that side, a key both sides set to different values is a conflict
  ``Merge((left, right), (base,))`` (reported with the node's path), a key one side
  deleted and the other changed is a conflict with an absent side. A node merged
  whole (changed on one side only) keeps that side's metadata.
- Modes and times are not part of a conflict: a mode changed on one side only wins,
  otherwise the left's; a merged node's times are the later of the two sides'.

Every path where both sides changed a node differently and the merge could not
reconcile them is reported in ``conflicts`` (its path in the merged tree). The
result is a new tree (no node is shared with the inputs) with inode numbers assigned
in path order and no version history, ready to be the base of a merge change.

Trees are walked with explicit stacks (no recursion), so any depth merges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.fold import ChangeState
from engine.merge import Merge
from engine.paths import RelPath
from engine.tree import (
    ROOT_INO,
    AnyNode,
    DirNode,
    FileNode,
    Meta,
    MetaSlot,
    SymlinkNode,
    Tree,
    merge_key,
    meta_key,
)

ABSENT = Merge.resolved(None)


@dataclass(frozen=True)
class TreeMergeResult:
    """A merged tree and the paths (in it) where both sides changed a node differently."""

    tree: Tree
    conflicts: tuple[RelPath, ...] = field(default=())

    @property
    def is_conflicted(self) -> bool:
        """Whether any path could not be merged cleanly."""
        return bool(self.conflicts)


def merge_trees(base: Tree, left: Tree, right: Tree) -> TreeMergeResult:
    """Merge ``right``'s changes since ``base`` into ``left`` (see module docstring).

    Args:
        base: the trees' common ancestor state.
        left: one side (the merge target); it keeps names on a kinds clash.
        right: the other side (the merge source).

    Returns:
        The merged tree (fresh inodes, no versions) and the conflicted paths, sorted.
    """
    merger = _Merger()
    root = merger.merge(base.root, left.root, right.root)
    if not isinstance(root, DirNode):  # the roots are directories on every side
        root = DirNode(ino=ROOT_INO, mode=left.root.mode, mtime_ms=0, atime_ms=0)
    tree = renumber(Tree(root))
    return TreeMergeResult(tree, tuple(sorted(merger.conflicts)))


def fresh_tree(tree: Tree) -> Tree:
    """Return a deep copy of ``tree`` without version history, keeping inode numbers.

    A child change starts from its parent's tree, but the parent's versions (who wrote
    what, when) must not decide races in the child's own log.
    """
    root = _copy(tree.root)
    assert isinstance(root, DirNode)
    return Tree(root, tree.next_ino)


def fresh_state(tree: Tree, window_ms: int) -> ChangeState:
    """Return the state a change starts from when its base tree is ``tree``.

    Nothing is folded yet (sequence 0, no applied ops) and no node has versions.
    """
    return ChangeState(tree=fresh_tree(tree), seq=0, window_ms=window_ms)


def renumber(tree: Tree) -> Tree:
    """Give every node of ``tree`` a new inode number in sorted path order (in place)."""
    ino = ROOT_INO
    for _, node in tree.walk():
        node.ino = ino
        ino += 1
    tree.next_ino = ino
    return tree


@dataclass(frozen=True, slots=True)
class _Clash:
    """A kinds clash: ``left`` keeps the name, ``right`` goes aside (its directory places it)."""

    left: AnyNode
    right: AnyNode


@dataclass(slots=True)
class _DirMerge:
    """A directory being merged name by name: one frame of `_Merger.merge`'s stack."""

    merged: DirNode
    base: dict[str, AnyNode]
    left: dict[str, AnyNode]
    right: dict[str, AnyNode]
    path: RelPath
    names: Iterator[str]
    #: Its name in the directory below it on the stack.
    name: str = ""
    #: One side deleted the directory: it goes when nothing is left in it.
    drop_if_empty: bool = False
    asides: list[tuple[str, AnyNode]] = field(default_factory=list)

    def finish(self) -> DirNode | None:
        """Place the clashing right-hand nodes aside; return the directory (None: gone)."""
        for name, node in self.asides:
            self.merged.children[_aside_name(self.merged, name)] = node
        if self.drop_if_empty and not self.merged.children:
            return None
        return self.merged


#: What merging one node gives: the merged node (None: absent), a clash for its
#: directory to place, or a directory whose children are still to merge.
_Outcome = AnyNode | None | _Clash | _DirMerge


class _Merger:
    """One merge: memoized node keys and the conflicts found so far."""

    def __init__(self) -> None:
        self.conflicts: list[RelPath] = []
        self._keys: dict[int, bytes] = {}

    def key(self, node: AnyNode | None) -> bytes:
        """Return a digest of what a reader observes of ``node`` (b"" when absent).

        Memoized per node; a directory's subtree is walked with an explicit stack.
        """
        if node is None:
            return b""
        keys = self._keys
        cached = keys.get(id(node))
        if cached is not None:
            return cached
        if not isinstance(node, DirNode):
            return self._leaf_key(node)
        frames: list[tuple[DirNode, Iterator[str], hashlib._Hash]] = [
            (node, iter(sorted(node.children)), _dir_hasher(node))
        ]
        while True:
            directory, names, h = frames[-1]
            for name in names:
                child = directory.children[name]
                encoded = name.encode("utf-8", "surrogateescape")
                h.update(b"\0%d:" % len(encoded) + encoded)
                child_key = keys.get(id(child))
                if child_key is None:
                    if isinstance(child, DirNode):
                        frames.append((child, iter(sorted(child.children)), _dir_hasher(child)))
                        break
                    child_key = self._leaf_key(child)
                h.update(child_key)
            else:
                frames.pop()
                digest = h.digest()
                keys[id(directory)] = digest
                if not frames:
                    return digest
                frames[-1][2].update(digest)

    def _leaf_key(self, node: FileNode | SymlinkNode) -> bytes:
        if isinstance(node, FileNode):
            head = b"f%o:%d:%d:" % (node.mode, node.mtime_ms, node.atime_ms)
            data = head + merge_key(node.value).encode() + meta_key(node.meta)
        else:
            head = b"l%d:%d:" % (node.mtime_ms, node.atime_ms)
            data = head + node.target.encode("utf-8", "surrogateescape") + meta_key(node.meta)
        digest = hashlib.sha256(data).digest()
        self._keys[id(node)] = digest
        return digest

    def merge(self, base: DirNode, left: DirNode, right: DirNode) -> AnyNode | None:
        """Return the merged root, walking the directories both sides changed with a stack."""
        outcome = self.node(base, left, right, ())
        assert not isinstance(outcome, _Clash)  # the roots are directories on every side
        if not isinstance(outcome, _DirMerge):
            return outcome
        stack = [outcome]
        while True:
            frame = stack[-1]
            name = next(frame.names, None)
            if name is None:
                stack.pop()
                done = frame.finish()
                if not stack:
                    return done
                if done is not None:
                    stack[-1].merged.children[frame.name] = done
                continue
            path = (*frame.path, name)
            outcome = self.node(
                frame.base.get(name), frame.left.get(name), frame.right.get(name), path
            )
            if isinstance(outcome, _DirMerge):
                outcome.name = name
                stack.append(outcome)
            elif isinstance(outcome, _Clash):
                frame.merged.children[name] = outcome.left
                frame.asides.append((name, outcome.right))
            elif outcome is not None:
                frame.merged.children[name] = outcome

    def node(
        self, base: AnyNode | None, left: AnyNode | None, right: AnyNode | None, path: RelPath
    ) -> _Outcome:
        """Merge the nodes at ``path`` (None: absent), recording conflicts."""
        kb, kl, kr = self.key(base), self.key(left), self.key(right)
        if kl == kr or kr == kb:
            return _copy(left) if left is not None else None
        if kl == kb:
            return _copy(right) if right is not None else None
        return self._both_changed(base, left, right, path)

    def _both_changed(
        self, base: AnyNode | None, left: AnyNode | None, right: AnyNode | None, path: RelPath
    ) -> _Outcome:
        if left is None:
            assert right is not None  # both absent would have been equal
            return self._one_deleted(base, right, path, left_deleted=True)
        if right is None:
            return self._one_deleted(base, left, path, left_deleted=False)
        if isinstance(left, DirNode) and isinstance(right, DirNode):
            return self._dirs(base, left, right, path)
        if isinstance(left, FileNode) and isinstance(right, FileNode):
            return self._files(base, left, right, path)
        if (
            isinstance(left, SymlinkNode)
            and isinstance(right, SymlinkNode)
            and left.target == right.target
        ):
            merged = _copy(left)
            _later_times(merged, left, right)
            merged.meta = self._meta(base, left, right, path)
            return merged
        # Kinds clash, or two symlink targets: the directory places ``right`` aside.
        self.conflicts.append(path)
        return _Clash(_copy(left), _copy(right))

    def _one_deleted(
        self, base: AnyNode | None, other: AnyNode, path: RelPath, *, left_deleted: bool
    ) -> _Outcome:
        """Merge a node one side deleted with the other side's changed ``other``."""
        if isinstance(base, DirNode) and isinstance(other, DirNode):
            empty = DirNode(ino=0, mode=other.mode, mtime_ms=0, atime_ms=0)
            sides = (empty, other) if left_deleted else (other, empty)
            frame = self._dirs(base, *sides, path)
            frame.drop_if_empty = True
            return frame
        if isinstance(base, FileNode) and isinstance(other, FileNode):
            gone = FileNode(ino=0, mode=other.mode, mtime_ms=0, atime_ms=0, value=ABSENT)
            files = (gone, other) if left_deleted else (other, gone)
            return self._files(base, *files, path)
        if isinstance(base, SymlinkNode) and isinstance(other, SymlinkNode):
            # A symlink cannot hold a conflict: the changed one stays (add wins).
            self.conflicts.append(path)
        # Otherwise the changed side replaced base's node by another kind: both sides
        # removed base's node, and one added something new. It stays.
        return _copy(other)

    def _dirs(
        self, base: AnyNode | None, left: DirNode, right: DirNode, path: RelPath
    ) -> _DirMerge:
        """Start merging two directories: their children are merged by `merge`, in order."""
        base_children = base.children if isinstance(base, DirNode) else {}
        merged = DirNode(
            ino=0,
            mode=_three_way_mode(base, left, right),
            mtime_ms=max(left.mtime_ms, right.mtime_ms),
            atime_ms=max(left.atime_ms, right.atime_ms),
        )
        merged.meta = self._meta(base, left, right, path)
        names = sorted(set(left.children) | set(right.children) | set(base_children))
        return _DirMerge(merged, base_children, left.children, right.children, path, iter(names))

    def _files(
        self, base: AnyNode | None, left: FileNode, right: FileNode, path: RelPath
    ) -> FileNode | None:
        base_value = base.value if isinstance(base, FileNode) else ABSENT
        value = left.value.plus_diff(right.value, base_value)
        if value.is_resolved() and value.adds[0] is None:
            return None
        merged = FileNode(
            ino=0,
            mode=_three_way_mode(base, left, right),
            mtime_ms=max(left.mtime_ms, right.mtime_ms),
            atime_ms=max(left.atime_ms, right.atime_ms),
            value=value,
        )
        if not value.is_resolved():
            self.conflicts.append(path)
        merged.meta = self._meta(base, left, right, path)
        return merged

    def _meta(
        self, base: AnyNode | None, left: AnyNode, right: AnyNode, path: RelPath
    ) -> Meta | None:
        """Merge metadata key by key (module docstring); a conflicted key reports ``path``."""
        metas = [
            (n.meta or {}) if n is not None and type(n) is type(left) else {}
            for n in (base, left, right)
        ]
        merged: Meta = {}
        conflicted = False
        for key in sorted(set().union(*metas)):
            values = [m[key].value if key in m else ABSENT for m in metas]
            value = values[1].plus_diff(values[2], values[0])
            if value.is_resolved() and value.adds[0] is None:
                continue
            conflicted = conflicted or not value.is_resolved()
            merged[key] = MetaSlot(value)
        if conflicted and path not in self.conflicts:
            self.conflicts.append(path)
        return merged or None


def _dir_hasher(node: DirNode) -> hashlib._Hash:
    head = b"d%o:%d:%d" % (node.mode, node.mtime_ms, node.atime_ms)
    return hashlib.sha256(head + meta_key(node.meta))


def _three_way_mode(base: AnyNode | None, left: AnyNode, right: AnyNode) -> int:
    """Return the mode a merge keeps: the side that changed it, else the left's."""
    if base is not None and type(base) is type(left) and left.mode == base.mode:
        return right.mode
    return left.mode


def _later_times(merged: AnyNode, left: AnyNode, right: AnyNode) -> None:
    merged.mtime_ms = max(left.mtime_ms, right.mtime_ms)
    merged.atime_ms = max(left.atime_ms, right.atime_ms)


def _aside_name(parent: DirNode, name: str) -> str:
    """Return ``<name>.conflict-<n>`` with the smallest n not taken in ``parent``."""
    n = 1
    while f"{name}.conflict-{n}" in parent.children:
        n += 1
    return f"{name}.conflict-{n}"


def _copy(root: AnyNode) -> AnyNode:
    """Return a deep copy of ``root`` without versions (contents are immutable, shared).

    Walked with an explicit stack of (original directory, its copy).
    """
    top = _copy_node(root)
    stack: list[tuple[DirNode, DirNode]] = []
    if isinstance(root, DirNode):
        assert isinstance(top, DirNode)
        stack.append((root, top))
    while stack:
        original, into = stack.pop()
        for name, child in original.children.items():
            copy = _copy_node(child)
            into.children[name] = copy
            if isinstance(child, DirNode):
                assert isinstance(copy, DirNode)
                stack.append((child, copy))
    return top


def _copy_node(node: AnyNode) -> AnyNode:
    """Return a copy of ``node`` alone, without versions (a directory without children)."""
    meta = {k: MetaSlot(slot.value) for k, slot in node.meta.items()} if node.meta else None
    if isinstance(node, DirNode):
        return DirNode(
            ino=node.ino, mode=node.mode, mtime_ms=node.mtime_ms, atime_ms=node.atime_ms, meta=meta
        )
    if isinstance(node, FileNode):
        return FileNode(
            ino=node.ino,
            mode=node.mode,
            mtime_ms=node.mtime_ms,
            atime_ms=node.atime_ms,
            meta=meta,
            value=node.value,
        )
    return SymlinkNode(
        ino=node.ino,
        mode=node.mode,
        mtime_ms=node.mtime_ms,
        atime_ms=node.atime_ms,
        meta=meta,
        target=node.target,
    )

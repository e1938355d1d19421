"""Checks an op against a tree before it is issued, with POSIX errnos.

The author of an op checks it against its own folded tree: an op that would fail
on a local filesystem raises `FsError` with the errno ``os`` would give, and is
never logged. An op that would change nothing (``mkdir -p`` of an existing
directory, a rename onto itself) is reported so the caller skips logging it.
Paths are real paths (the SDK resolved symlinks); a symlink met in the middle of a
path is ``ENOTDIR``.
"""

from __future__ import annotations

import errno

from engine.errors import FsError
from engine.ops import Append, Chmod, Cp, Mkdir, Mv, Op, Rm, SetMetadata, Symlink, Utimes, Write
from engine.paths import RelPath, is_ancestor, to_str, validate
from engine.tree import AnyNode, DirNode, FileNode, SymlinkNode, Tree

MODE_MAX = 0o7777


def check(tree: Tree, op: Op) -> bool:
    """Raise `FsError` if ``op`` is invalid on ``tree``; return False if it is a no-op."""
    if isinstance(op, Write | Append):
        node = _existing_or_none(tree, op.path)
        if not op.path or isinstance(node, DirNode):
            raise FsError(errno.EISDIR, to_str(op.path))
        if isinstance(node, SymlinkNode):
            raise FsError(errno.ELOOP, to_str(op.path), "unresolved symlink")
        _check_mode(op.mode, op.path)
        return True
    if isinstance(op, Mkdir):
        return _check_mkdir(tree, op)
    if isinstance(op, Rm):
        node = _lookup(tree, op.path)
        if not op.path:
            raise FsError(errno.EBUSY, "", "cannot remove a repository root")
        if isinstance(node, DirNode) and node.children and not op.recursive:
            raise FsError(errno.ENOTEMPTY, to_str(op.path))
        return True
    if isinstance(op, Mv | Cp):
        return _check_move(tree, op)
    if isinstance(op, Chmod):
        _lookup(tree, op.path)
        _check_mode(op.mode, op.path)
        return True
    if isinstance(op, Symlink):
        if _existing_or_none(tree, op.path) is not None or not op.path:
            raise FsError(errno.EEXIST, to_str(op.path))
        if not op.target:
            raise FsError(errno.ENOENT, to_str(op.path), "empty symlink target")
        if "\x00" in op.target:
            raise FsError(errno.EINVAL, to_str(op.path), "symlink target contains NUL")
        return True
    if isinstance(op, SetMetadata):
        return _check_set_metadata(tree, op)
    assert isinstance(op, Utimes)
    _lookup(tree, op.path)
    return True


def _check_set_metadata(tree: Tree, op: SetMetadata) -> bool:
    """The node must exist; a set that changes no key's resolved value is a no-op.

    A set of a conflicted key is never a no-op: it resolves the conflict.
    """
    meta = _lookup(tree, op.path).meta or {}
    items = dict(op.items)
    if op.clear:
        for key in meta:
            items.setdefault(key, None)
    for key, value in items.items():
        slot = meta.get(key)
        current = None
        if slot is not None:
            if not slot.value.is_resolved():
                return True
            content = slot.value.adds[0]
            data = content.inline_bytes() if content is not None else None
            current = data.decode("utf-8") if data is not None else None
        if current != value:
            return True
    return False


def _check_mode(mode: int, path: RelPath) -> None:
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= MODE_MAX:
        raise FsError(errno.EINVAL, to_str(path), f"invalid mode {mode!r}")


def _walk_parent(tree: Tree, path: RelPath) -> DirNode:
    """Return the directory holding ``path``: ENOENT if missing, ENOTDIR if not a directory."""
    validate(path)
    node: AnyNode = tree.root
    for i, name in enumerate(path[:-1]):
        child = node.children.get(name) if isinstance(node, DirNode) else None
        if child is None:
            raise FsError(errno.ENOENT, to_str(path[: i + 1]))
        if not isinstance(child, DirNode):
            raise FsError(errno.ENOTDIR, to_str(path[: i + 1]))
        node = child
    assert isinstance(node, DirNode)
    return node


def _existing_or_none(tree: Tree, path: RelPath) -> AnyNode | None:
    """Return the node at ``path`` or None; the parent must exist and be a directory."""
    if not path:
        return tree.root
    return _walk_parent(tree, path).children.get(path[-1])


def _lookup(tree: Tree, path: RelPath) -> AnyNode:
    """Return the node at ``path``, else raise ENOENT / ENOTDIR."""
    node = _existing_or_none(tree, path)
    if node is None:
        raise FsError(errno.ENOENT, to_str(path))
    return node


def _check_mkdir(tree: Tree, op: Mkdir) -> bool:
    _check_mode(op.mode, op.path)
    if not op.parents:
        if _existing_or_none(tree, op.path) is not None:
            raise FsError(errno.EEXIST, to_str(op.path))
        return True
    validate(op.path)
    node: AnyNode = tree.root
    for i, name in enumerate(op.path):
        assert isinstance(node, DirNode)
        child = node.children.get(name)
        if child is None:
            return True
        if not isinstance(child, DirNode):
            last = i == len(op.path) - 1
            raise FsError(errno.EEXIST if last else errno.ENOTDIR, to_str(op.path[: i + 1]))
        node = child
    return False


def _check_move(tree: Tree, op: Mv | Cp) -> bool:
    src = _lookup(tree, op.src)
    if not op.src or not op.dst:
        raise FsError(errno.EBUSY, "", "cannot move or copy a repository root")
    if isinstance(op, Cp) and isinstance(src, DirNode) and not op.recursive:
        raise FsError(errno.EISDIR, to_str(op.src), "is a directory (use recursive)")
    dst = _existing_or_none(tree, op.dst)
    if op.src == op.dst:
        if isinstance(op, Cp):
            raise FsError(errno.EINVAL, to_str(op.dst), "source and destination are the same")
        return False
    if is_ancestor(op.src, op.dst):
        raise FsError(errno.EINVAL, to_str(op.dst), "cannot move a directory into itself")
    if isinstance(op, Mv) and is_ancestor(op.dst, op.src):
        # rename(2) onto an ancestor of the source: Linux checks this before the kinds.
        raise FsError(errno.ENOTEMPTY, to_str(op.dst))
    if dst is None:
        return True
    if isinstance(op, Cp) and isinstance(src, DirNode):
        raise FsError(errno.EEXIST, to_str(op.dst))
    if isinstance(src, DirNode) and not isinstance(dst, DirNode):
        raise FsError(errno.ENOTDIR, to_str(op.dst))
    if not isinstance(src, DirNode) and isinstance(dst, DirNode):
        raise FsError(errno.EISDIR, to_str(op.dst))
    if isinstance(dst, DirNode) and dst.children:
        raise FsError(errno.ENOTEMPTY, to_str(op.dst))
    if isinstance(op, Cp) and isinstance(dst, SymlinkNode) and isinstance(src, FileNode):
        raise FsError(errno.ELOOP, to_str(op.dst), "unresolved symlink")
    return True

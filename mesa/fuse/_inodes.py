"""The kernel-visible inode table of one FUSE mount.

Layout: inode 1 is the mount root (it lists the org), inode 2 is ``/<org>`` (it lists
the repos), and every node of repo number ``k`` (1-based, in the order the repos were
given) is ``k << REPO_SHIFT | epoch << EPOCH_SHIFT | tree_ino``; a repo root is
``k << REPO_SHIFT | 1`` in every epoch. Tree inode numbers are assigned by the fold in
log order and never reused within a change, so a FUSE inode number is stable for the
life of a node (a rename keeps it), unique across the repos of the mount, and the same
on every mount that lists the repos in the same order. The epoch starts at 0 and
changes when the repo's mount switches to another change (its bookmark moved), whose
tree numbers its nodes independently: the inodes of the old tree then read as removed
and never alias a node of the new one. The generation is always 0.

The table holds an `Inode` for every inode the kernel knows (its lookup count is
positive), keeping the node object even after the node left the tree: an unlinked
file that is still open keeps working until the kernel forgets it. Nodes are
mutated in place by the fold, so an `Inode` always sees the node's current state.

The table also mirrors the dentries the kernel holds (parent inode, name -> child
inode) and the names it answered "no such entry" for (negative dentries), which is
what `mesa.fuse._invalidate` needs to tell the kernel what changed.

**Pending nodes.** A file created or a directory made through this mount exists
here before its entry is in the log (`mesa.fuse._writer`): its `Inode` is *pending*
and holds a detached node of its own, numbered from `PENDING_BASE` up, and listed
under its parent (`InodeTable.pending`) ahead of the tree. When its entry is folded
the inode is *bound* to the tree's node: the node's tree number then maps to the
pending inode number (an alias), so the kernel keeps one inode for the file.

Invariants: an inode is in the table iff its lookup count is positive, or it is
permanent (root, org, repo roots) or pending, or it is a directory holding pending
nodes (they are listed under its number, which its next lookup must give again);
``parent``/``name`` record where the node was last seen (lookup, readdir, create,
rename, or a folded event), relative to its parent directory, so a move of an
ancestor does not make them stale.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

from engine.merge import Merge
from engine.paths import RelPath
from engine.tree import ROOT_INO, AnyNode, DirNode, FileNode
from mesa._mount import RepoMount

ROOT = 1
ORG = 2
EPOCH_SHIFT = 40
REPO_SHIFT = 56
TREE_MASK = (1 << EPOCH_SHIFT) - 1
EPOCH_MASK = (1 << (REPO_SHIFT - EPOCH_SHIFT)) - 1
MAX_REPOS = (1 << (64 - REPO_SHIFT)) - 1
#: Tree numbers from here up are pending nodes' (the fold never counts this far).
PENDING_BASE = 1 << 39


@dataclass(eq=False, slots=True)
class Inode:
    """One inode the kernel knows (see module docstring).

    Attributes:
        ino: the FUSE inode number.
        repo: the repo it belongs to (None for the root and the org directory).
        node: its tree node (None for the root, the org directory and repo roots,
            whose node is looked up live).
        lookups: the kernel's lookup count.
        parent: the FUSE inode of the directory it was last seen in.
        name: its name there.
        unlinked: it left the tree while the kernel still knew it.
        epoch: the repo's epoch when the kernel learned it (see module docstring).
        page_key: the value (merge key) whose bytes the kernel's page cache holds,
            None when unknown.
        pending: created here, its entry not folded yet (``node`` is detached).
        published: a pending node's creating entry was appended (not folded yet).
        set_mode: a mode set here whose entry is not folded yet (shown meanwhile).
        set_times: (atime ms, mtime ms) set here, likewise.
        attr_gen: bumped by every ``set_mode``/``set_times`` change.
        queued: the mount's writer has a job for this inode waiting to run.
        write_error: why a write of this inode could not be published; the next
            fsync of it raises ``EIO`` with it, once.
    """

    ino: int
    repo: RepoMount | None
    node: AnyNode | None
    lookups: int = 0
    parent: int = 0
    name: str = ""
    unlinked: bool = False
    epoch: int = 0
    page_key: str | None = None
    pending: bool = False
    published: bool = False
    set_mode: int | None = None
    set_times: tuple[int, int] | None = None
    attr_gen: int = 0
    queued: bool = False
    write_error: str | None = None

    @property
    def permanent(self) -> bool:
        """Root, org and repo roots are never dropped from the table (pending nodes neither)."""
        return self.node is None or self.pending


class InodeTable:
    """Maps FUSE inodes to repos and nodes; mirrors the kernel's dentries."""

    def __init__(self, org: str, repos: list[RepoMount]) -> None:
        self.org = org
        self.repos = list(repos)
        if len(self.repos) > MAX_REPOS:
            raise ValueError(f"at most {MAX_REPOS} repos in one FUSE mount")
        self._index = {id(repo): i + 1 for i, repo in enumerate(self.repos)}
        self._epochs = {id(repo): 0 for repo in self.repos}
        self.by_name = {repo.name: repo for repo in self.repos}
        self.inodes: dict[int, Inode] = {
            ROOT: Inode(ROOT, None, None),
            ORG: Inode(ORG, None, None, parent=ROOT, name=org),
        }
        for repo in self.repos:
            ino = self.ino_of(repo, ROOT_INO)
            self.inodes[ino] = Inode(ino, repo, None, parent=ORG, name=repo.name)
        #: parent inode -> name -> child inode: the positive dentries the kernel holds.
        self.dentries: dict[int, dict[str, int]] = {}
        #: parent inode -> names answered "no such entry" with a cache timeout.
        self.negatives: dict[int, set[str]] = {}
        #: directory inode -> time (ms) of the last entry that changed its names.
        self.dir_mtimes: dict[int, int] = {}
        #: parent inode -> name -> pending inode (created here, not folded yet).
        self.pending: dict[int, dict[str, int]] = {}
        #: (repo index, epoch, tree ino) -> the pending inode number it was bound to.
        self._aliases: dict[tuple[int, int, int], int] = {}
        self._next_pending = PENDING_BASE

    # -- numbers ---------------------------------------------------------------------

    def ino_of(self, repo: RepoMount, tree_ino: int) -> int:
        """Return the FUSE inode of a node of ``repo``'s current tree."""
        assert 0 < tree_ino <= TREE_MASK, f"tree inode {tree_ino} out of range"
        index, epoch = self._index[id(repo)], self._epochs[id(repo)]
        if tree_ino == ROOT_INO:
            return index << REPO_SHIFT | tree_ino
        alias = self._aliases.get((index, epoch, tree_ino))
        if alias is not None:
            return alias
        return index << REPO_SHIFT | epoch << EPOCH_SHIFT | tree_ino

    def current(self, inode: Inode) -> bool:
        """Whether ``inode`` belongs to its repo's current tree (virtual levels always do)."""
        return inode.repo is None or inode.node is None or inode.epoch == self._epoch(inode.repo)

    def _epoch(self, repo: RepoMount) -> int:
        return self._epochs[id(repo)]

    def repo_root(self, repo: RepoMount) -> Inode:
        """Return the inode of ``repo``'s root directory."""
        return self.inodes[self.ino_of(repo, ROOT_INO)]

    # -- lookups -----------------------------------------------------------------------

    def get(self, ino: int) -> Inode | None:
        """Return the inode ``ino`` if the kernel knows it."""
        return self.inodes.get(ino)

    @staticmethod
    def node_of(inode: Inode) -> AnyNode | None:
        """Return the inode's node; a repo root's is looked up live."""
        if inode.node is not None:
            return inode.node
        if inode.repo is not None:
            return inode.repo.replica.state.tree.root
        return None

    def is_dir(self, inode: Inode) -> bool:
        """Return whether the inode is a directory (virtual levels are)."""
        return inode.repo is None or isinstance(self.node_of(inode), DirNode)

    def child(self, parent: Inode, name: str) -> tuple[RepoMount | None, AnyNode | None, int]:
        """Return (repo, node, ino) of ``name`` in ``parent`` now; ino 0 if there is none."""
        if parent.ino == ROOT:
            return (None, None, ORG) if name == self.org else (None, None, 0)
        if parent.ino == ORG:
            repo = self.by_name.get(name)
            return (repo, None, self.ino_of(repo, ROOT_INO)) if repo else (None, None, 0)
        node = self.node_of(parent)
        assert parent.repo is not None
        if not isinstance(node, DirNode) or not self.current(parent):
            return parent.repo, None, 0
        pending = self.pending.get(parent.ino, {}).get(name)
        if pending is not None:
            inode = self.inodes[pending]
            return inode.repo, inode.node, pending
        found = node.children.get(name)
        if found is None:
            return parent.repo, None, 0
        return parent.repo, found, self.ino_of(parent.repo, found.ino)

    def listing(self, parent: Inode) -> list[tuple[str, AnyNode | None, int]]:
        """Return (name, node, ino) of every entry of a directory, sorted by name."""
        if parent.ino == ROOT:
            return [(self.org, None, ORG)]
        if parent.ino == ORG:
            return [
                (repo.name, None, self.ino_of(repo, ROOT_INO))
                for repo in sorted(self.repos, key=lambda r: r.name)
            ]
        node = self.node_of(parent)
        assert parent.repo is not None
        if not isinstance(node, DirNode) or not self.current(parent):
            return []
        repo = parent.repo
        entries: dict[str, tuple[AnyNode | None, int]] = {
            name: (child, self.ino_of(repo, child.ino)) for name, child in node.children.items()
        }
        for name, ino in self.pending.get(parent.ino, {}).items():
            entries[name] = (self.inodes[ino].node, ino)
        return [(name, child, ino) for name, (child, ino) in sorted(entries.items())]

    # -- what the kernel learns and forgets --------------------------------------------

    def learn(
        self, parent: Inode, name: str, repo: RepoMount | None, node: AnyNode | None
    ) -> Inode:
        """Record that the kernel now holds ``name`` in ``parent``; count one lookup."""
        if node is None:
            ino = ORG if parent.ino == ROOT else self.ino_of(_req(repo), ROOT_INO)
        else:
            ino = self.ino_of(_req(repo), node.ino)
        inode = self.inodes.get(ino)
        if inode is None:
            inode = Inode(ino, repo, node, epoch=self._epoch(repo) if repo is not None else 0)
            self.inodes[ino] = inode
        inode.lookups += 1
        inode.parent, inode.name = parent.ino, name
        inode.unlinked = False
        self.dentries.setdefault(parent.ino, {})[name] = ino
        self.forget_negative(parent.ino, name)
        return inode

    def add_pending(self, parent: Inode, name: str, node: AnyNode) -> Inode:
        """Enter a node created here, before its entry is folded (see module docstring).

        ``node`` is detached (not in the tree); it gets the next pending number. The
        returned inode counts one lookup (the reply to create or mkdir).
        """
        repo = _req(parent.repo)
        if self._next_pending > TREE_MASK:
            raise OSError(errno.ENOSPC, "out of pending inode numbers")
        node.ino = self._next_pending
        self._next_pending += 1
        ino = self.ino_of(repo, node.ino)
        inode = Inode(ino, repo, node, epoch=self._epoch(repo), pending=True)
        self.inodes[ino] = inode
        self.pending.setdefault(parent.ino, {})[name] = ino
        self.learn(parent, name, repo, node)
        return inode

    def bind(self, inode: Inode, node: AnyNode | None) -> None:
        """A pending inode's entry was folded: ``node`` is its node in the tree now.

        With ``node`` None (the entry left nothing of the kind at that path: a racing
        writer made something else there) the inode reads as removed.
        """
        names = self.pending.get(inode.parent)
        if names is not None and names.get(inode.name) == inode.ino:
            del names[inode.name]
            if not names:
                del self.pending[inode.parent]
                # The parent was kept for its pending children; it may go now.
                self.forget(inode.parent, 0)
        inode.pending = False
        if node is None or inode.epoch != self._epoch(_req(inode.repo)):
            inode.unlinked = True
            self.drop_dentry(inode.parent, inode.name)
        else:
            index = self._index[id(inode.repo)]
            self._aliases[(index, inode.epoch, node.ino)] = inode.ino
            inode.node = node
        if not inode.lookups:
            self.forget(inode.ino, 0)

    def learn_negative(self, parent: Inode, name: str) -> None:
        """Record that the kernel caches "no such entry" for ``name`` in ``parent``."""
        self.negatives.setdefault(parent.ino, set()).add(name)

    def forget_negative(self, parent_ino: int, name: str) -> bool:
        """Drop a recorded negative entry; return whether there was one."""
        names = self.negatives.get(parent_ino)
        if names is None or name not in names:
            return False
        names.discard(name)
        if not names:
            del self.negatives[parent_ino]
        return True

    def drop_dentry(self, parent_ino: int, name: str) -> int | None:
        """Forget the kernel's dentry ``name`` in ``parent_ino``; return its inode."""
        names = self.dentries.get(parent_ino)
        if names is None:
            return None
        ino = names.pop(name, None)
        if not names:
            del self.dentries[parent_ino]
        return ino

    def forget(self, ino: int, count: int) -> None:
        """Lower the lookup count; drop the inode once the kernel forgot it."""
        inode = self.inodes.get(ino)
        if inode is None:
            return
        inode.lookups = max(0, inode.lookups - count)
        if inode.lookups or inode.permanent or ino in self.pending:
            # A directory holding pending nodes stays: they are listed under its
            # number, which the next lookup must give again (its alias survives).
            return
        del self.inodes[ino]
        if inode.node is not None and inode.repo is not None and inode.node.ino < PENDING_BASE:
            key = (self._index[id(inode.repo)], inode.epoch, inode.node.ino)
            if self._aliases.get(key) == ino:
                del self._aliases[key]
        names = self.dentries.get(inode.parent)
        if names is not None and names.get(inode.name) == ino:
            self.drop_dentry(inode.parent, inode.name)
        self.negatives.pop(ino, None)
        self.dentries.pop(ino, None)

    def switch(self, repo: RepoMount) -> list[tuple[int, str]]:
        """The repo's mount switched to another change: start a new epoch.

        Every inode of the old tree is marked removed, and the dentries and negative
        entries the kernel holds under the repo root are forgotten; returns them as
        (parent inode, name) for the kernel to drop.
        """
        root = self.repo_root(repo)
        index = self._index[id(repo)]
        self._aliases = {k: v for k, v in self._aliases.items() if k[0] != index}
        self._epochs[id(repo)] = (self._epochs[id(repo)] + 1) & EPOCH_MASK
        for inode in self.inodes.values():
            if inode.repo is repo and not inode.permanent:
                inode.unlinked = True
                inode.page_key = None
        names = sorted(self.dentries.pop(root.ino, {})) + sorted(self.negatives.pop(root.ino, ()))
        return [(root.ino, name) for name in names]

    # -- paths -------------------------------------------------------------------------

    def path_of(self, inode: Inode) -> RelPath | None:
        """Return the node's path in its repo now, or None if it left the tree.

        Follows the recorded parent links (checking each against the tree); when
        they are stale (a concurrent move), searches the tree and repairs them.
        """
        # Pending nodes (made here, not folded yet) hang below their parent's path:
        # climb to the first settled one (a loop: a pending chain may be deep).
        pending: list[str] = []
        while True:
            if inode.repo is None or not self.current(inode):
                return None
            if not inode.pending:
                break
            up = self.inodes.get(inode.parent)
            if up is None:
                return None
            pending.append(inode.name)
            inode = up
        below = tuple(reversed(pending))
        path = self.verified_path(inode)
        if path is not None:
            return (*path, *below)
        if inode.node is None:
            return below
        found = _search(inode.repo.replica.state.tree.root, inode.node)
        if found is None:
            return None
        path, parent = found
        inode.parent, inode.name = self.ino_of(inode.repo, parent.ino), path[-1]
        return (*path, *below)

    def verified_path(self, inode: Inode) -> RelPath | None:
        """Return the path the recorded parent links give, if the tree agrees; else None."""
        names: list[str] = []
        current = inode
        while current.node is not None:
            parent = self.inodes.get(current.parent)
            if parent is None or parent.repo is not current.repo:
                return None
            directory = self.node_of(parent)
            if not isinstance(directory, DirNode):
                return None
            if directory.children.get(current.name) is not current.node:
                return None
            names.append(current.name)
            current = parent
        return tuple(reversed(names))

    def pending_dirs(self, ino: int) -> int:
        """Count the directories made here under ``ino`` that the tree does not show yet."""
        count = 0
        parent = self.inodes.get(ino)
        node = self.node_of(parent) if parent is not None else None
        shown = node.children if isinstance(node, DirNode) else {}
        for name, child_ino in self.pending.get(ino, {}).items():
            child = self.inodes.get(child_ino)
            if child is not None and isinstance(child.node, DirNode) and name not in shown:
                count += 1
        return count

    def abs_path(self, repo: RepoMount, path: RelPath) -> str:
        """Return the absolute mount path of ``path`` in ``repo`` (for error messages)."""
        return "/".join((repo.prefix, *path))

    def describe(self, inode: Inode) -> str:
        """Return the inode's absolute mount path, or its last known name (for reports)."""
        if inode.repo is None:
            return f"/{self.org}" if inode.ino != 1 else "/"
        path = self.path_of(inode)
        if path is not None:
            return self.abs_path(inode.repo, path)
        return f"{inode.repo.prefix}/.../{inode.name} (removed)"


def _req(repo: RepoMount | None) -> RepoMount:
    assert repo is not None
    return repo


def _search(root: DirNode, target: AnyNode) -> tuple[RelPath, DirNode] | None:
    """Find ``target`` under ``root`` by identity; return its path and parent directory."""
    for path, parent, node in _walk(root):
        if node is target:
            return path, parent
    return None


def _walk(root: DirNode) -> Iterator[tuple[RelPath, DirNode, AnyNode]]:
    stack: list[tuple[RelPath, DirNode]] = [((), root)]
    while stack:
        path, directory = stack.pop()
        for name, child in directory.children.items():
            yield (*path, name), directory, child
            if isinstance(child, DirNode):
                stack.append(((*path, name), child))


def value_size(value: Merge) -> int | None:
    """Return the size of a resolved value, or None for a conflict (it must be rendered)."""
    if not value.is_resolved():
        return None
    only = value.adds[0]
    return 0 if only is None else only.size


def is_conflict(node: AnyNode | None) -> bool:
    """Return whether ``node`` is a conflicted file."""
    return isinstance(node, FileNode) and not node.value.is_resolved()

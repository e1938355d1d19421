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

Invariants: an inode is in the table iff its lookup count is positive or it is
permanent (root, org, repo roots); ``parent``/``name`` record where the node was
last seen (lookup, readdir, create, rename, or a folded event), relative to its
parent directory, so a move of an ancestor does not make them stale.
"""

from __future__ import annotations

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

    @property
    def permanent(self) -> bool:
        """Root, org and repo roots are never dropped from the table."""
        return self.node is None


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

    # -- numbers ---------------------------------------------------------------------

    def ino_of(self, repo: RepoMount, tree_ino: int) -> int:
        """Return the FUSE inode of a node of ``repo``'s current tree."""
        assert 0 < tree_ino <= TREE_MASK, f"tree inode {tree_ino} out of range"
        base = self._index[id(repo)] << REPO_SHIFT | tree_ino
        return base if tree_ino == ROOT_INO else base | self._epochs[id(repo)] << EPOCH_SHIFT

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
        return [
            (name, child, self.ino_of(repo, child.ino))
            for name, child in sorted(node.children.items())
        ]

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
        if inode.lookups or inode.permanent:
            return
        del self.inodes[ino]
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
        if inode.repo is None or not self.current(inode):
            return None
        path = self.verified_path(inode)
        if path is not None:
            return path
        if inode.node is None:
            return ()
        found = _search(inode.repo.replica.state.tree.root, inode.node)
        if found is None:
            return None
        path, parent = found
        inode.parent, inode.name = self.ino_of(inode.repo, parent.ino), path[-1]
        return path

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

    def abs_path(self, repo: RepoMount, path: RelPath) -> str:
        """Return the absolute mount path of ``path`` in ``repo`` (for error messages)."""
        return "/".join((repo.prefix, *path))


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

"""The invalidation planner and the inode table on a tree deeper than Python's recursion limit.

The kernel can hold dentries 2,500 levels deep (``mkdir -p`` through the mount looks
each level up). When another mount removes the top with ``rm -r``, the planner must
tell the kernel every known dentry below it is gone, deepest first, as it does for a
shallow tree (tests/fuse/test_planner.py), and paths of nodes made here but not
folded yet (pending) must resolve however deep the chain. Both walk with explicit
stacks; a recursion here would fail in the mount's pump and break the mount.
"""

from __future__ import annotations

import itertools

from engine.tree import DirNode
from mesa.fuse._inodes import Inode
from mesa.fuse._invalidate import InvalEntry, InvalInode
from tests.fuse.test_planner import World, sync, world

__all__ = ["world"]  # the fixture

DEPTH = 2_500


async def test_remote_rm_r_of_a_2500_deep_tree_deletes_every_known_dentry(world: World) -> None:
    levels = "/".join(["d"] * DEPTH)
    await world.remote.fs.mkdir("/acme/app/" + levels, recursive=True)
    await sync(world)
    inode = world.table.repo_root(world.local.repo)
    known: list[Inode] = [inode]
    for _ in range(DEPTH):  # as the kernel's lookups would, one level at a time
        repo, node, ino = world.table.child(inode, "d")
        assert ino
        inode = world.table.learn(inode, "d", repo, node)
        known.append(inode)
    world.take()
    await world.remote.fs.rm("/acme/app/d", recursive=True)
    await sync(world)
    expected = [
        InvalEntry(parent.ino, "d", deleted=child.ino)
        for parent, child in reversed(list(itertools.pairwise(known)))
    ]
    assert world.take() == [*expected, InvalInode(known[0].ino, attr_only=True)]
    assert all(inode.unlinked for inode in known[1:])
    assert world.local.repo.broken is None


async def test_the_path_of_a_2500_deep_pending_chain(world: World) -> None:
    parent = world.table.repo_root(world.local.repo)
    for _ in range(DEPTH):
        parent = world.table.add_pending(
            parent, "p", DirNode(ino=0, mode=0o755, mtime_ms=0, atime_ms=0)
        )
    assert world.table.path_of(parent) == ("p",) * DEPTH

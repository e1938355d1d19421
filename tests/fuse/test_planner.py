"""The inode table and the invalidation planner, without a kernel.

Two mounts of one change on the memory transport: ``remote`` writes, ``local`` is the
mount a FUSE process would serve. The test tells ``local``'s inode table what the
kernel holds (as lookups would), lets ``remote`` change things, and checks which
notifications the planner queues for the kernel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from engine.content import Content
from engine.merge import Merge
from engine.paths import RelPath
from engine.replica import Folded
from engine.tree import DirNode, FileNode
from mesa import Mesa, MesaFileSystem
from mesa._mount import RepoMount
from mesa.fuse._inodes import ORG, REPO_SHIFT, ROOT, Inode, InodeTable
from mesa.fuse._invalidate import InvalEntry, InvalInode, Notification, Planner
from transports.auth import Keyring, generate_key
from transports.base import ManualClock
from transports.memory import MemoryTransport

KEY = generate_key()
EMPTY = Merge.resolved(Content.of(b""))


@dataclass
class Side:
    fs: MesaFileSystem
    repo: RepoMount


@dataclass
class World:
    remote: Side
    local: Side
    table: InodeTable
    sent: list[Notification]
    clock: ManualClock

    def know(self, path: str) -> Inode:
        """Make the kernel know every component of ``path`` (as lookups would)."""
        inode = self.table.repo_root(self.local.repo)
        for name in path.split("/"):
            repo, node, ino = self.table.child(inode, name)
            assert ino, f"{path}: {name} does not exist"
            inode = self.table.learn(inode, name, repo, node)
        return inode

    def ino(self, path: RelPath) -> int:
        node = self.local.repo.replica.state.tree.lookup(path)
        assert node is not None
        return self.table.ino_of(self.local.repo, node.ino)

    def take(self) -> list[Notification]:
        out, self.sent[:] = list(self.sent), []
        return out


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock()
    keyring = Keyring()
    keyring.add(KEY, "acme")
    transport = MemoryTransport(keyring, clock)
    client = Mesa(org="acme", api_key=KEY, transport=transport, clock=clock)
    await client.repos.create("app")
    async with client.fs.mount(["app"]) as remote, client.fs.mount(["app"]) as local:
        repo = local.repo_mounts[0]
        table = InodeTable("acme", [repo])
        planner = Planner(table)
        sent: list[Notification] = []

        def record(mounted: RepoMount, folded: list[Folded]) -> None:
            sent.extend(planner.plan(mounted, folded))

        repo.add_fold_listener(record)
        yield World(Side(remote, remote.repo_mounts[0]), Side(local, repo), table, sent, clock)
    await transport.aclose()


async def sync(w: World) -> None:
    await w.local.fs.wait_synced()


def test_inode_numbers_are_per_repo_and_stable() -> None:
    class FakeRepo:
        name = "x"

    a, b = FakeRepo(), FakeRepo()
    table = InodeTable("acme", [a, b])  # type: ignore[list-item]
    assert table.ino_of(a, 1) == 1 << REPO_SHIFT | 1  # type: ignore[arg-type]
    assert table.ino_of(b, 7) == 2 << REPO_SHIFT | 7  # type: ignore[arg-type]
    assert {ROOT, ORG}.isdisjoint({table.ino_of(a, 1), table.ino_of(b, 1)})  # type: ignore[arg-type]


async def test_remote_write_to_a_known_file_drops_its_pages(world: World) -> None:
    await world.remote.fs.write("/acme/app/f.txt", b"one")
    await sync(world)
    known = world.know("f.txt")
    world.take()
    await world.remote.fs.write("/acme/app/f.txt", b"two")
    await sync(world)
    assert world.take() == [InvalInode(known.ino)]


async def test_negative_entry_is_dropped_when_the_name_appears(world: World) -> None:
    root = world.table.repo_root(world.local.repo)
    world.table.learn_negative(root, "new.txt")
    await world.remote.fs.write("/acme/app/other.txt", b"x")
    await sync(world)
    # The kernel caches nothing about other.txt; the root's mtime changed.
    assert world.take() == [InvalInode(root.ino, attr_only=True)]
    await world.remote.fs.write("/acme/app/new.txt", b"x")
    await sync(world)
    assert world.take() == [InvalEntry(root.ino, "new.txt"), InvalInode(root.ino, attr_only=True)]
    assert not world.table.negatives


async def test_remote_rm_of_a_known_file_is_a_delete(world: World) -> None:
    await world.remote.fs.mkdir("/acme/app/d")
    await world.remote.fs.write("/acme/app/d/f", b"x")
    await sync(world)
    d, f = world.know("d"), world.know("d/f")
    world.take()
    await world.remote.fs.rm("/acme/app/d/f")
    await sync(world)
    assert world.take() == [
        InvalEntry(d.ino, "f", deleted=f.ino),
        InvalInode(d.ino, attr_only=True),
    ]
    assert f.unlinked
    assert world.table.dentries.get(d.ino, {}) == {}


async def test_remote_rm_r_deletes_known_children_first(world: World) -> None:
    await world.remote.fs.mkdir("/acme/app/d/e", recursive=True)
    await world.remote.fs.write("/acme/app/d/e/f", b"x")
    await sync(world)
    d, e, f = world.know("d"), world.know("d/e"), world.know("d/e/f")
    root = world.table.repo_root(world.local.repo)
    world.take()
    await world.remote.fs.rm("/acme/app/d", recursive=True)
    await sync(world)
    assert world.take() == [
        InvalEntry(e.ino, "f", deleted=f.ino),
        InvalEntry(d.ino, "e", deleted=e.ino),
        InvalEntry(root.ino, "d", deleted=d.ino),
        InvalInode(root.ino, attr_only=True),
    ]


async def test_remote_move_is_not_a_delete_and_keeps_inodes(world: World) -> None:
    await world.remote.fs.mkdir("/acme/app/src")
    await world.remote.fs.write("/acme/app/src/m.py", b"x")
    await sync(world)
    src, module = world.know("src"), world.know("src/m.py")
    root = world.table.repo_root(world.local.repo)
    world.take()
    await world.remote.fs.mv("/acme/app/src", "/acme/app/lib")
    await sync(world)
    assert world.take() == [InvalEntry(root.ino, "src"), InvalInode(root.ino, attr_only=True)]
    assert not src.unlinked
    assert (src.parent, src.name) == (root.ino, "lib")
    assert world.ino(("lib", "m.py")) == module.ino
    assert world.table.path_of(module) == ("lib", "m.py")


async def test_rename_over_a_known_file_deletes_the_replaced_one(world: World) -> None:
    await world.remote.fs.write("/acme/app/a", b"a")
    await world.remote.fs.write("/acme/app/b", b"b")
    await sync(world)
    a, b = world.know("a"), world.know("b")
    root = world.table.repo_root(world.local.repo)
    world.take()
    await world.remote.fs.mv("/acme/app/a", "/acme/app/b")
    await sync(world)
    assert world.take() == [
        InvalEntry(root.ino, "a"),
        InvalEntry(root.ino, "b", deleted=b.ino),
        InvalInode(root.ino, attr_only=True),
    ]
    assert world.table.path_of(a) == ("b",)
    assert world.table.path_of(b) is None


async def test_own_entries_invalidate_nothing(world: World) -> None:
    await world.local.fs.write("/acme/app/mine", b"1")
    await sync(world)
    world.know("mine")
    await world.local.fs.write("/acme/app/mine", b"2")
    await world.local.fs.rm("/acme/app/mine")
    assert world.take() == []


async def test_forget_drops_the_inode_and_its_dentry(world: World) -> None:
    await world.remote.fs.write("/acme/app/f", b"x")
    await sync(world)
    f = world.know("f")
    world.know("f")
    root = world.table.repo_root(world.local.repo)
    world.table.forget(f.ino, 1)
    assert world.table.get(f.ino) is f
    world.table.forget(f.ino, 1)
    assert world.table.get(f.ino) is None
    assert "f" not in world.table.dentries.get(root.ino, {})
    world.table.forget(root.ino, 5)  # permanent
    assert world.table.get(root.ino) is root


async def test_switching_change_starts_a_new_epoch(world: World) -> None:
    await world.remote.fs.mkdir("/acme/app/d")
    await world.remote.fs.write("/acme/app/d/f", b"x")
    await sync(world)
    d, f = world.know("d"), world.know("d/f")
    root = world.table.repo_root(world.local.repo)
    world.table.learn_negative(root, "missing")
    assert world.table.switch(world.local.repo) == [(root.ino, "d"), (root.ino, "missing")]
    assert d.unlinked
    assert f.unlinked
    assert not world.table.current(d)
    assert world.table.current(root)
    assert world.table.path_of(f) is None
    assert world.table.listing(d) == []
    # The same tree node now has another inode number: old ones never alias new ones.
    assert world.ino(("d",)) != d.ino
    assert world.ino(()) == root.ino
    again = world.know("d")
    assert again is not d
    assert world.table.current(again)


async def test_directory_mtime_follows_its_names_until_utimens(world: World) -> None:
    await world.remote.fs.mkdir("/acme/app/d")
    await world.remote.fs.write("/acme/app/d/f", b"1")
    await sync(world)
    d = world.know("d")
    changed = world.table.dir_mtimes[d.ino]
    world.take()
    world.clock.advance(5_000)
    await world.remote.fs.write("/acme/app/d/f", b"2")  # in place: the names stayed
    await sync(world)
    assert world.table.dir_mtimes[d.ino] == changed
    assert world.take() == []  # nothing the kernel holds changed
    await world.remote.fs.write("/acme/app/d/g", b"new")
    await sync(world)
    assert world.table.dir_mtimes[d.ino] == changed + 5_000
    assert InvalInode(d.ino, attr_only=True) in world.take()
    await world.remote.fs.utimes("/acme/app/d", 1_000, 2_000)
    await sync(world)
    assert d.ino not in world.table.dir_mtimes


async def test_a_forgotten_directory_keeps_the_files_created_in_it_visible(world: World) -> None:
    # A directory made here folds before the file made in it (the writer keeps syscall
    # order); if the kernel forgets both meanwhile (memory pressure), the next lookup
    # of the directory must still list the pending file under it.
    root = world.table.repo_root(world.local.repo)
    d = world.table.add_pending(root, "d", DirNode(0, 0o755, 0, 0))
    c = world.table.add_pending(d, "c", FileNode(0, 0o644, 0, 0, value=EMPTY))
    await world.local.fs.mkdir("/acme/app/d")
    await sync(world)
    node = world.local.repo.replica.state.tree.lookup(RelPath("d"))
    assert isinstance(node, DirNode)
    world.table.bind(d, node)
    world.table.forget(c.ino, c.lookups)  # the kernel prunes the child first
    world.table.forget(d.ino, d.lookups)
    repo, found, ino = world.table.child(root, "d")
    assert ino == d.ino  # still the number the kernel was given
    again = world.table.learn(root, "d", repo, found)
    assert world.table.child(again, "c")[2] == c.ino
    # Once the file's own entry folds, the directory is an ordinary forgettable inode.
    await world.local.fs.write("/acme/app/d/c", b"")
    await sync(world)
    world.table.bind(c, world.local.repo.replica.state.tree.lookup(RelPath("d/c")))
    world.table.forget(again.ino, again.lookups)
    assert world.table.get(d.ino) is None
    assert world.table.child(root, "d")[2] == world.ino(RelPath("d"))

"""Which bytes a read through a FUSE handle is served from (no kernel; memory transport).

The kernel keeps one page cache and one size per inode, and cuts reads at that size;
`Handles.reading` keeps a read-only handle on the version it opened while the size
the kernel was given last (`Handles.tell`) holds it whole, and moves it to the told
version once that size is smaller (torture seed 1170238483: serving the handle's
open-time bytes after the kernel had a smaller size read back old bytes cut at it).
The real-kernel reproduction is in test_edges.py.
"""

from __future__ import annotations

import asyncio

from engine.tree import FileNode
from mesa.fuse._handles import Handles
from mesa.fuse._inodes import Inode, InodeTable
from mesa_sdk import Mesa, MesaFileSystem
from tests.mesa.conftest import ORG, clock, keyring, mesa, transport
from transports.base import ManualClock

__all__ = ["clock", "keyring", "mesa", "transport"]

P = f"/{ORG}/app"


def _file(table: InodeTable, fs: MesaFileSystem, name: str) -> Inode:
    """The inode of ``name`` at the repo root, as a lookup makes it."""
    (repo,) = fs.repo_mounts
    root = table.repo_root(repo)
    _, node, ino = table.child(root, name)
    table.learn(root, name, repo, node)
    found = table.get(ino)
    assert found is not None
    return found


async def _bytes(handles: Handles, fh: int) -> bytes:
    of = await handles.reading(fh)
    return of.spool.read(0, of.spool.size + 1)


async def test_a_read_only_handle_follows_the_version_the_kernel_was_told(mesa: Mesa) -> None:
    changed: list[Inode] = []
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"old old old\n")
        table = InodeTable(fs.org, list(fs.repo_mounts))
        handles = Handles(table, changed.append)
        inode = _file(table, fs, "f")
        assert inode.node is not None
        handles.tell(inode.ino, inode.node.value)  # the lookup's reply
        fh, _ = await handles.open(inode, writable=False, truncate=False)
        assert await _bytes(handles, fh) == b"old old old\n"
        await fs.write(f"{P}/f", b"new\n")  # folded: the tree has the new version
        # Until the kernel is given the new size, the handle's bytes are the ones its
        # size describes.
        assert await _bytes(handles, fh) == b"old old old\n"
        node = table.node_of(inode)
        assert node is not None
        handles.tell(inode.ino, node.value)  # a getattr answered with the new size
        assert await _bytes(handles, fh) == b"new\n"  # the kernel cuts at 4 bytes
        # A later open shares that buffer; releasing both frees it.
        fh2, _ = await handles.open(inode, writable=False, truncate=False)
        assert await _bytes(handles, fh2) == b"new\n"
        assert handles.current(inode.ino) is handles.get(fh).file is handles.get(fh2).file
        handles.release(fh)
        handles.release(fh2)
        assert handles.current(inode.ino) is None
        # A larger new version holds the old one whole: a reader keeps its version
        # (it gets end-of-file at its end, not the new version's tail).
        fh3, _ = await handles.open(inode, writable=False, truncate=False)
        await fs.write(f"{P}/f", b"a longer new version\n")
        node = table.node_of(inode)
        assert node is not None
        handles.tell(inode.ino, node.value)
        assert await _bytes(handles, fh3) == b"new\n"
        fh4, _ = await handles.open(inode, writable=False, truncate=False)
        assert await _bytes(handles, fh4) == b"a longer new version\n"
        assert changed == []


async def test_a_file_open_for_writing_is_shown_and_dropped_when_it_closes(
    mesa: Mesa,
) -> None:
    changed: list[Inode] = []
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"old\n")
        table = InodeTable(fs.org, list(fs.repo_mounts))
        handles = Handles(table, changed.append)
        inode = _file(table, fs, "f")
        writer, _ = await handles.open(inode, writable=True, truncate=False)
        buffer = handles.get(writer).file
        assert handles.shown(inode.ino) is buffer  # open for writing: shown, clean
        handles.tell(inode.ino, buffer)
        await fs.write(f"{P}/f", b"another writer's\n")
        reader, _ = await handles.open(inode, writable=False, truncate=False)
        assert await _bytes(handles, reader) == b"old\n"  # the shown buffer, whole
        assert handles.release(writer) is None  # nothing written: nothing to publish
        # Shown no more, and the tree holds another value: the kernel must drop it.
        assert changed == [inode]
        assert handles.shown(inode.ino) is None
        node = table.node_of(inode)
        assert node is not None
        handles.tell(inode.ino, node.value)
        assert await _bytes(handles, reader) == b"old\n"  # held whole by the new size
        later, _ = await handles.open(inode, writable=False, truncate=False)
        assert await _bytes(handles, later) == b"another writer's\n"


async def test_a_version_equal_to_the_tree_is_published_while_an_earlier_one_is_in_flight(
    mesa: Mesa,
) -> None:
    """``cat x >> f`` then ``truncate -s <old size> f`` (torture, after a server restart).

    The append is acknowledged but not folded yet when the truncate's close is
    published: the tree still holds the old bytes, which the truncate restores. Skipping
    that Write as a no-op left the append's bytes in the file once it folded. The same
    holds for a mode or times set back while the change to them is in flight.
    """
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"old\n")
        (repo,) = fs.repo_mounts
        table = InodeTable(fs.org, list(fs.repo_mounts))
        handles = Handles(table, lambda inode: None)
        inode = _file(table, fs, "f")
        errors: list[Exception] = []
        assert isinstance(inode.node, FileNode)
        mode = inode.node.mode

        fh, _ = await handles.open(inode, writable=True, truncate=False, append=True)
        of = handles.get(fh).file
        of.write(4, b"appended\n", append=True)
        assert handles.release(fh) is of
        inode.set_mode = 0o600 if mode != 0o600 else 0o640  # chmod
        inode.attr_gen += 1
        appended = await handles.job(inode, errors.append)
        assert appended.seq is not None
        fh, _ = await handles.open(inode, writable=True, truncate=False)
        assert handles.get(fh).file is of
        of.truncate(4)
        assert handles.release(fh) is of
        inode.set_mode = mode  # chmod back
        inode.attr_gen += 1
        # Nothing awaited in between: the append is not folded yet.
        assert repo.replica.seq < appended.seq
        restored = await handles.job(inode, errors.append)
        assert restored.seq is not None
        assert restored.seq > appended.seq
        await repo.wait_folded(restored.seq)
        appended.settle()
        restored.settle()
        assert await fs.read(f"{P}/f") == b"old\n"
        node = table.node_of(inode)
        assert isinstance(node, FileNode)
        assert node.mode == mode
        assert errors == []


async def test_a_reader_keeps_its_version_when_a_larger_conflict_replaces_it(
    mesa: Mesa, clock: ManualClock
) -> None:
    """A conflict's size is its rendering's: a reader's version it holds whole is kept.

    Torture seed 2100639286: a reader opened a 162-byte version, the file became a
    410-byte conflict, and the reader's second read (at offset 162) was served the
    rendering's bytes from there: a version no close published, cut at 162.
    """
    changed: list[Inode] = []
    async with mesa.fs.mount(repos=["app"]) as fs, mesa.fs.mount(repos=["app"]) as other:
        await fs.write(f"{P}/f", b"base\n")
        await other.wait_synced()
        table = InodeTable(fs.org, list(fs.repo_mounts))
        handles = Handles(table, changed.append)
        inode = _file(table, fs, "f")
        fh, _ = await handles.open(inode, writable=False, truncate=False)
        assert await _bytes(handles, fh) == b"base\n"
        clock.advance(5000)
        await asyncio.gather(
            fs.write(f"{P}/f", b"one side, longer than base\n"),
            other.write(f"{P}/f", b"the other side\n"),
        )
        await fs.wait_synced()
        node = table.node_of(inode)
        assert isinstance(node, FileNode)
        assert not node.value.is_resolved()
        handles.tell(inode.ino, node.value)  # a getattr answered with the rendered size
        assert await _bytes(handles, fh) == b"base\n"
        # A new open reads the rendered block.
        later, _ = await handles.open(inode, writable=False, truncate=False)
        rendered = await _bytes(handles, later)
        assert rendered.startswith(b"<<<<<<<")
        assert b"the other side\n" in rendered
        handles.release(fh)
        handles.release(later)
        assert handles.current(inode.ino) is None

"""Kernel cache invalidation from the log, off the request path.

The mount keeps kernel caches long (entry, attribute and negative-entry timeouts,
``keep_cache``) and corrects them from the log: each batch of folded entries is
compared, right after the fold, with what the kernel holds (`InodeTable`'s dentries
and negative entries), and the differences are queued as notifications. One thread
of its own sends them in order: ``invalidate_entry`` and ``invalidate_inode`` block
until related requests finish, so calling them inside a request handler (or on the
event loop that serves the requests) can deadlock.

Rules, for every path an entry by another writer changed:

- A name the kernel has no positive dentry for, answered "no such entry" before:
  drop the negative dentry.
- The same node under the name: drop its attributes and cached pages
  (``invalidate_inode``).
- A different node, or none, under the name: drop the dentry. If the old node left
  the tree (it is not at any path the batch changed), pass ``deleted=`` so inotify
  watchers of the file see ``IN_DELETE_SELF``, after doing the same for every dentry
  below it, deepest first. A node that only moved is never passed as deleted (the
  kernel would mark a moved directory dead).
- For a subtree (``recursive``), the dentries the kernel holds below the path are
  checked the same way.
- A directory whose names changed gets a new mtime (`Planner._dir_times`) and its
  attributes are dropped.

Entries this mount wrote were done through the kernel, which already updated its
caches; only a file they left conflicted (a race) is invalidated, since the kernel
thinks it holds the bytes it wrote.

When the repo's mount switches to another change (its bookmark moved), the inode
table starts a new epoch and every entry the kernel holds under the repo root is
dropped (see `InodeTable.switch`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine.fold import Event
from engine.ops import Chmod, SetMetadata, Utimes
from engine.paths import RelPath
from engine.replica import Folded
from engine.tree import AnyNode, DirNode, FileNode
from mesa._mount import RepoMount
from mesa.fuse._inodes import Inode, InodeTable, is_conflict

log = logging.getLogger("mesa.fuse")

EntryNotifier = Callable[[int, bytes, int], None]
InodeNotifier = Callable[[int, bool], None]


@dataclass(frozen=True, slots=True)
class InvalEntry:
    """Drop dentry ``name`` of ``parent``; ``deleted`` is the inode gone with it (or 0)."""

    parent: int
    name: str
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class InvalInode:
    """Drop the attributes (and, unless ``attr_only``, the cached pages) of ``ino``."""

    ino: int
    attr_only: bool = False


Notification = InvalEntry | InvalInode


class Planner:
    """Computes the notifications for folded batches (pure; no kernel calls)."""

    def __init__(self, table: InodeTable) -> None:
        self.table = table

    def plan(self, repo: RepoMount, folded: list[Folded]) -> list[Notification]:
        """Return the notifications that bring the kernel's caches up to date."""
        tree = repo.replica.state.tree
        events: list[tuple[Event, bool]] = [
            (event, f.entry.author == repo.mount_id) for f in folded for event in f.events
        ]
        placed: set[int] = set()
        for event, _ in events:
            node = tree.lookup(event.path)
            if node is not None:
                placed.add(id(node))
                self._relocate(repo, event.path, node)
        out: list[Notification] = []
        seen: set[tuple[RelPath, bool]] = set()
        for event, own in events:
            if (event.path, event.recursive) in seen:
                continue
            seen.add((event.path, event.recursive))
            if own:
                self._own(repo, event.path, out)
            else:
                self._reconcile(repo, event.path, event.recursive, placed, out)
        self._dir_times(repo, folded, out)
        return out

    def _dir_times(self, repo: RepoMount, folded: list[Folded], out: list[Notification]) -> None:
        """A directory's mtime is the time of the entry that last changed its names.

        The fold keeps a directory's own ``mtime_ms`` (what mkdir or utimens set); the
        mount reports the sequencer time of the last entry that added, removed or
        moved one of its names instead, until a ``utimens`` of the directory, as a
        local filesystem does (tools such as Python's import system cache listings by
        directory mtime). Writes to existing files, chmod/utimens of children and
        metadata sets do not count. The kernel drops the attributes of a directory another writer
        changed; for this mount's own entries it already did.
        """
        tree, table = repo.replica.state.tree, self.table
        dropped: set[int] = set()
        for f in folded:
            op, own = f.entry.op, f.entry.author == repo.mount_id
            for event in f.events:
                node = tree.lookup(event.path) if event.path else None
                if isinstance(op, Chmod | Utimes | SetMetadata) or _rewritten(node, f.seq):
                    if isinstance(op, Utimes) and isinstance(node, DirNode):
                        table.dir_mtimes.pop(table.ino_of(repo, node.ino), None)
                    continue
                parent = tree.lookup(event.path[:-1]) if event.path else None
                if not isinstance(parent, DirNode):
                    continue
                ino = table.ino_of(repo, parent.ino)
                table.dir_mtimes[ino] = f.time_ms
                if not own and ino not in dropped and table.get(ino) is not None:
                    dropped.add(ino)
                    out.append(InvalInode(ino, attr_only=True))

    def _relocate(self, repo: RepoMount, path: RelPath, node: AnyNode) -> None:
        """Record where a node the kernel knows now is (it may have moved)."""
        if not path:
            return
        inode = self.table.get(self.table.ino_of(repo, node.ino))
        parent = repo.replica.state.tree.lookup(path[:-1])
        if inode is None or parent is None:
            return
        inode.parent, inode.name = self.table.ino_of(repo, parent.ino), path[-1]

    def _own(self, repo: RepoMount, path: RelPath, out: list[Notification]) -> None:
        node = repo.replica.state.tree.lookup(path)
        if node is not None and is_conflict(node):
            inode = self.table.get(self.table.ino_of(repo, node.ino))
            if inode is not None:
                inode.page_key = None
                out.append(InvalInode(inode.ino))

    def _reconcile(
        self,
        repo: RepoMount,
        path: RelPath,
        recursive: bool,  # noqa: FBT001
        placed: set[int],
        out: list[Notification],
    ) -> None:
        tree = repo.replica.state.tree
        if not path:
            out.append(InvalInode(self.table.repo_root(repo).ino, attr_only=True))
            if recursive:
                self._subtree(self.table.repo_root(repo), tree.root, placed, out)
            return
        parent_node = tree.lookup(path[:-1])
        if not isinstance(parent_node, DirNode):
            return  # the parent went too: its own event covers what was below it
        parent = self.table.get(self.table.ino_of(repo, parent_node.ino))
        if parent is None:
            return  # the kernel holds nothing below a directory it does not know
        self._entry(parent, parent_node, path[-1], recursive=recursive, placed=placed, out=out)

    def _entry(
        self,
        parent: Inode,
        parent_node: DirNode,
        name: str,
        *,
        recursive: bool,
        placed: set[int],
        out: list[Notification],
    ) -> None:
        """Bring the kernel's view of ``name`` in ``parent`` up to date."""
        todo: list[Callable[[], None]] = []
        self._entry_step(
            todo, parent, parent_node, name, recursive=recursive, placed=placed, out=out
        )
        _drain(todo)

    def _subtree(
        self, inode: Inode, node: DirNode, placed: set[int], out: list[Notification]
    ) -> None:
        """Check every dentry the kernel holds below a directory that stayed."""
        todo: list[Callable[[], None]] = []
        self._subtree_step(todo, inode, node, placed, out)
        _drain(todo)

    # The kernel may hold dentries thousands of levels deep: the walk below uses an
    # explicit stack of steps (``todo``; the last one runs next). A step that would
    # have recursed pushes what is left to do, so notifications come out in the order
    # a depth-first recursion gives.

    def _entry_step(
        self,
        todo: list[Callable[[], None]],
        parent: Inode,
        parent_node: DirNode,
        name: str,
        *,
        recursive: bool,
        placed: set[int],
        out: list[Notification],
    ) -> None:
        table = self.table
        now = parent_node.children.get(name)
        child_ino = table.dentries.get(parent.ino, {}).get(name)
        child = table.get(child_ino) if child_ino is not None else None
        if child is None:
            if child_ino is not None:
                table.drop_dentry(parent.ino, name)
            if now is not None and table.forget_negative(parent.ino, name):
                out.append(InvalEntry(parent.ino, name))
            return
        if now is not None and now is child.node:
            out.append(InvalInode(child.ino, attr_only=isinstance(now, DirNode)))
            if not isinstance(now, DirNode):
                child.page_key = None
            elif recursive:
                self._subtree_step(todo, child, now, placed, out)
            return
        table.drop_dentry(parent.ino, name)
        if child.node is not None and id(child.node) in placed:
            out.append(InvalEntry(parent.ino, name))  # it moved: not deleted
            return
        # Once everything below it is gone, the entry itself.
        todo.append(functools.partial(out.append, InvalEntry(parent.ino, name, deleted=child.ino)))
        self._gone_step(todo, child, placed, out)

    def _subtree_step(
        self,
        todo: list[Callable[[], None]],
        inode: Inode,
        node: DirNode,
        placed: set[int],
        out: list[Notification],
    ) -> None:
        for name in sorted(self.table.dentries.get(inode.ino, {}), reverse=True):
            todo.append(
                functools.partial(
                    self._entry_step,
                    todo,
                    inode,
                    node,
                    name,
                    recursive=True,
                    placed=placed,
                    out=out,
                )
            )

    def _gone_step(
        self,
        todo: list[Callable[[], None]],
        inode: Inode,
        placed: set[int],
        out: list[Notification],
    ) -> None:
        """A node left the tree: the dentries below it go first, deepest first."""
        inode.unlinked = True
        inode.page_key = None
        below = self.table.dentries.get(inode.ino, {})
        for name in sorted(below, reverse=True):
            todo.append(functools.partial(self._gone_child, todo, inode, below, name, placed, out))

    def _gone_child(
        self,
        todo: list[Callable[[], None]],
        inode: Inode,
        below: dict[str, int],
        name: str,
        placed: set[int],
        out: list[Notification],
    ) -> None:
        child = self.table.get(below[name])
        self.table.drop_dentry(inode.ino, name)
        if child is None:
            return
        if child.node is not None and id(child.node) in placed:
            out.append(InvalEntry(inode.ino, name))
            return
        todo.append(functools.partial(out.append, InvalEntry(inode.ino, name, deleted=child.ino)))
        self._gone_step(todo, child, placed, out)


def _drain(todo: list[Callable[[], None]]) -> None:
    """Run the steps on ``todo`` until none is left (each may push more)."""
    while todo:
        todo.pop()()


def _rewritten(node: AnyNode | None, seq: int) -> bool:
    """Whether entry ``seq`` changed an existing file in place (its names stayed)."""
    return isinstance(node, FileNode) and any(
        v.seq == seq and v.before is not None for v in node.versions
    )


@dataclass(frozen=True)
class _Marker:
    """A place in the notification queue: ``reached`` runs once everything before it went."""

    reached: Callable[[], None]


class Notifier:
    """Sends notifications to the kernel from a thread of its own, in order."""

    def __init__(self, entry: EntryNotifier, inode: InodeNotifier) -> None:
        self._entry = entry
        self._inode = inode
        self._queue: queue.SimpleQueue[list[Notification | _Marker] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self.sent = 0

    def start(self) -> None:
        """Start the sending thread."""
        self._thread = threading.Thread(target=self._run, name="mesa-fuse-invalidate", daemon=True)
        self._thread.start()

    def submit(self, batch: list[Notification]) -> None:
        """Queue notifications (called on the event loop; never blocks)."""
        if not batch:
            return
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put(list[Notification | _Marker](batch))

    @property
    def busy(self) -> bool:
        """Whether notifications are queued or being sent."""
        return not self._idle.is_set()

    async def flushed(self) -> None:
        """Return once every notification submitted before this call reached the kernel.

        Awaited on the event loop (never blocking it): the marker goes through the same
        FIFO queue, so requests the kernel sends meanwhile are still served, and a
        notification waiting for one of them (a page lock) cannot deadlock.
        """
        if self._thread is None or not self.busy:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def mark() -> None:
            loop.call_soon_threadsafe(settle)

        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put([_Marker(mark)])
        await done

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until everything queued was sent (for tests and shutdown)."""
        return self._idle.wait(timeout_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after what is queued (a notification stuck in the kernel is abandoned)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            for item in batch:
                self._send(item)
            with self._lock:
                self._pending -= 1
                if not self._pending:
                    self._idle.set()

    def _send(self, item: Notification | _Marker) -> None:
        if isinstance(item, _Marker):
            item.reached()
            return
        try:
            if isinstance(item, InvalEntry):
                name = item.name.encode("utf-8", "surrogateescape")
                self._entry(item.parent, name, item.deleted)
            else:
                self._inode(item.ino, item.attr_only)
            self.sent += 1
        except FileNotFoundError:
            pass  # the kernel had already dropped it
        except OSError as exc:
            log.debug("invalidation %s failed: %s", item, exc)
        except Exception:
            log.exception("invalidation %s failed", item)


class Invalidator:
    """The fold listener side: plan on the loop, send on the thread."""

    def __init__(self, table: InodeTable, notifier: Notifier) -> None:
        self.planner = Planner(table)
        self.notifier = notifier

    def on_folded(self, repo: RepoMount, folded: list[Folded]) -> None:
        """Called right after each fold (must not raise or block)."""
        try:
            batch = self.planner.plan(repo, folded)
        except Exception:
            log.exception("planning invalidations failed")
            return
        self.notifier.submit(batch)

    def on_switched(self, repo: RepoMount) -> None:
        """The repo's mount switched to another change: drop everything under its root."""
        try:
            table = self.planner.table
            dropped = table.switch(repo)
            batch: list[Notification] = [InvalEntry(parent, name) for parent, name in dropped]
            batch.append(InvalInode(table.repo_root(repo).ino, attr_only=True))
        except Exception:
            log.exception("planning invalidations for a switch failed")
            return
        self.notifier.submit(batch)

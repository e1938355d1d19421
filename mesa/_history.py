"""The ``fs.changes`` namespace, and reading a change's past.

``fs.changes`` creates changes, switches the mount between them, checkpoints, and
lists them (see docs/versioning.md). The past is the log: ``history(path)`` decodes
the entries of the mounted change that touch a path; ``fs.read(path, at=seq)`` folds
a scratch replica of the change up to sequence ``seq`` (from the newest snapshot at or
before ``seq``, else from the change's base) and reads the path there;
``restore(path, at=seq)`` writes those bytes back as a new write. Paths here are taken
literally (``/<org>/<repo>/...``, ``.`` and ``..`` folded): a path that no longer
exists still has a history. Costs: history reads the whole log of the change; a read
of the past folds at most the entries between the snapshot it starts from and ``at``.
"""

from __future__ import annotations

import builtins
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine import paths
from engine.codec import decode_entry
from engine.errors import CodecError
from engine.ids import ROOT_CHANGE_ID
from engine.ops import Append, Chmod, Cp, Mkdir, Mv, Op, Rm, SetMetadata, Symlink, Utimes, Write
from engine.tree import AnyNode, DirNode, FileNode, SymlinkNode, Tree
from mesa import _bookmarks, _changes
from mesa._args import message_arg
from mesa._changes import ChangeInfo, Folded
from mesa._errormap import fs_errors, os_error
from mesa._mount import RepoMount
from mesa._mounted import MountedRepos
from mesa._records import ChangeRecord
from mesa._store import RepoStore
from mesa.errors import ConflictError, InvalidOptionsError, LogCorruptError

MAX_SYMLINK_HOPS = 40
OP_NAMES: dict[type, str] = {
    Write: "write",
    Append: "append",
    Mkdir: "mkdir",
    Rm: "rm",
    Mv: "mv",
    Cp: "cp",
    Chmod: "chmod",
    Symlink: "symlink",
    Utimes: "utimes",
    SetMetadata: "set_metadata",
}


@dataclass(frozen=True)
class CheckpointResult:
    """What ``fs.changes.checkpoint`` did: the saved change and the new active one.

    The ``*_oid`` fields are commit oids (`mesa._changes.commit_oid`): the saved
    change's tree as it was sealed, and the new (empty) descendant's.
    """

    saved_change_oid: str
    active_change_oid: str
    saved_change_id: str
    active_change_id: str


@dataclass(frozen=True)
class HistoryEntry:
    """One entry of a change's log that touched a path."""

    seq: int
    time_ms: int
    author: str
    op: str
    paths: tuple[str, ...]
    #: For ``set_metadata`` and ``clear_metadata``: the keys set, in order (None:
    #: deleted). A clear deletes every other key too.
    metadata: tuple[tuple[str, str | None], ...] = ()


async def resolve_source(store: RepoStore, bookmark: str | None, change_id: str | None) -> str:
    """Return the change named by exactly one of ``bookmark`` and ``change_id``.

    Raises:
        InvalidOptionsError: both or neither given, or a malformed id or name.
        NotFoundError: the bookmark or change does not exist.
    """
    if (bookmark is None) == (change_id is None):
        raise InvalidOptionsError("pass exactly one of bookmark= and change_id=")
    if bookmark is not None:
        return (await _bookmarks.require_record(store, bookmark))[0].change_id
    assert change_id is not None
    return (await _changes.require_change(store, _changes.check_change_id(change_id))).change_id


class FsChanges:
    """``fs.changes``: the changes of the mounted repos, and their past."""

    def __init__(self, repos: MountedRepos, write: Callable[[str, bytes], Awaitable[None]]) -> None:
        self._repos = repos
        self._write = write

    async def new(
        self,
        repo: str,
        *,
        bookmark: str | None = None,
        change_id: str | None = None,
        message: str | None = None,
    ) -> str:
        """Fork a new change off a bookmark's change or a change, and switch to it.

        The source's current tree is sealed as the new change's base. The mount then
        follows no bookmark. Returns the new change id.

        Raises:
            FileNotFoundError: the source bookmark or change does not exist.
            InvalidOptionsError: both or neither of ``bookmark`` and ``change_id``.
            OSError: EROFS for a read-only repo.
        """
        message_arg(message)
        rm = self._repos.writable(repo)
        with fs_errors(rm.prefix):
            source = await resolve_source(rm.store, bookmark, change_id)
            async with rm.exclusive():
                folded = await _fold_of(rm, source)
                child = await _changes.create_child(
                    rm.store, source, folded, message=message or "", author=rm.mount_id
                )
                try:
                    await rm.switch_locked(child.change_id, follow=None)
                except BaseException:
                    # Nothing points at the new change yet: it goes again, so a call
                    # that raises leaves no change behind.
                    await _changes.delete_change(rm.store, child.change_id)
                    raise
        return child.change_id

    async def edit(
        self, repo: str, *, bookmark: str | None = None, change_id: str | None = None
    ) -> str:
        """Switch the mount to an existing change (following ``bookmark`` if given).

        Raises:
            FileNotFoundError: the bookmark or change does not exist.
            InvalidOptionsError: both or neither given, or the root change.
        """
        rm = self._repos.mounted(repo)
        with fs_errors(rm.prefix):
            target = await resolve_source(rm.store, bookmark, change_id)
            await rm.switch(target, follow=bookmark)
        return target

    async def current(self, repo: str) -> ChangeInfo:
        """Return the mounted change of ``repo`` as this mount has folded it."""
        rm = self._repos.mounted(repo)
        record = await _changes.require_change(rm.store, rm.change_id)
        return _changes.info_of(record, rm.replica.state)

    async def list(self, repo: str, *, limit: int = 50) -> list[ChangeInfo]:
        """Return the changes reachable from the checkout, most recent first (0: all)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionsError("limit must be an int >= 0")
        rm = self._repos.mounted(repo)
        out: list[ChangeInfo] = []
        for record in await _changes.reachable(rm.store, rm.change_id, limit):
            if record.change_id == rm.change_id:
                out.append(_changes.info_of(record, rm.replica.state))
            else:
                out.append(await _changes.change_info(rm.store, record.change_id))
        return out

    async def checkpoint(self, repo: str, message: str | None = None) -> CheckpointResult:
        """Describe the current change, fork a descendant, advance its bookmarks onto it.

        Pending writes are folded first and no write starts meanwhile. ``message``
        None keeps the description, "" clears it. The mount switches to the new
        change (keeping the bookmark it follows).

        Raises:
            InvalidOptionsError: no bookmark points at the current change.
            ConflictError: a bookmark moved concurrently (retry).
        """
        message_arg(message)
        rm = self._repos.writable(repo)
        store = rm.store
        async with rm.exclusive():
            await rm.wait_synced()
            saved = rm.change_id
            names = [
                (record.name, revision)
                for record, revision in await _bookmarks.list_records(store)
                if record.change_id == saved
            ]
            if not names:
                raise InvalidOptionsError(
                    f"checkpoint needs a bookmark on the current change {saved}; "
                    "create one with fs.bookmarks.create"
                )
            saved_oid = _changes.commit_oid(saved, rm.replica.state.tree)
            # Sealing encodes the state before its first await: nothing folds in between.
            child = await _changes.create_child(
                store, saved, Folded(rm.replica.state, rm.entries), message="", author=rm.mount_id
            )
            old_message = (await _changes.require_change(store, saved)).message
            moved: list[str] = []
            try:
                if message is not None:
                    await _changes.describe(store, saved, message, rm.ctx.clock.now_ms())
                await _move_all(store, names, child, moved)
                await rm.switch_locked(child.change_id, follow=rm.bookmark)
            except BaseException:
                await _undo_checkpoint(store, saved, old_message, message, child, moved)
                raise
            active_oid = _changes.commit_oid(child.change_id, rm.replica.state.tree)
        return CheckpointResult(saved_oid, active_oid, saved, child.change_id)

    async def history(self, path: str) -> builtins.list[HistoryEntry]:
        """Return the entries of the mounted change touching ``path``, oldest first.

        An entry touches a path when it names the path, one of its ancestors (``rm
        -r``, ``mv`` of a parent) or one of its descendants. Renames are not followed.
        """
        rm, rel = self._locate(path)
        return await change_history(rm.store, rm.change_id, rel)

    async def restore(self, path: str, *, at: int) -> None:
        """Write the bytes ``path`` had at sequence ``at`` back, as a new write.

        Raises:
            FileNotFoundError: the path was not a file at ``at``.
        """
        data = await read_at(self._repos, path, at)
        await self._write(path, data)

    def _locate(self, path: str) -> tuple[RepoMount, paths.RelPath]:
        return self._repos.locate(path)


async def _fold_of(rm: RepoMount, change_id: str) -> Folded:
    """Return the current state of ``change_id``: the mount's own if it is mounted here."""
    if change_id == rm.change_id:
        await rm.wait_synced()
        return Folded(rm.replica.state, rm.entries)
    return await _changes.current_state(rm.store, change_id)


async def _move_all(
    store: RepoStore, names: list[tuple[str, int]], child: ChangeRecord, moved: list[str]
) -> None:
    """Move every bookmark to ``child`` by compare-and-set, in name order.

    Each bookmark moved is added to ``moved`` (for `_undo_checkpoint`). The first lost
    race raises `ConflictError`.
    """
    for name, revision in sorted(names):
        await _bookmarks.cas_move(store, name, child.change_id, revision)
        moved.append(name)


async def _undo_checkpoint(
    store: RepoStore,
    saved: str,
    old_message: str,
    message: str | None,
    child: ChangeRecord,
    moved: list[str],
) -> None:
    """Put back what a failed checkpoint wrote: bookmarks, the message, the new change.

    Each step is a compare-and-set against what the checkpoint itself wrote, so a
    concurrent writer's later change is never overwritten. What cannot be put back is
    raised (never only logged), with the original failure as its context. Snapshot
    records sealed on the way stay: they are caches of states the log holds.
    """
    leftovers: list[str] = []
    for name in moved:
        try:
            found = await _bookmarks.get_record(store, name)
            if found is None or found[0].change_id != child.change_id:
                leftovers.append(f"bookmark {name!r} moved on meanwhile")
                continue
            await _bookmarks.cas_move(store, name, saved, found[1])
        except Exception as exc:
            leftovers.append(f"bookmark {name!r} still points at {child.change_id}: {exc}")
    if message is not None and message != old_message:
        try:
            current = await _changes.require_change(store, saved)
            if current.message == message:
                await _changes.describe(store, saved, old_message, current.updated_at_ms)
        except Exception as exc:
            leftovers.append(f"the message of {saved} stays {message!r}: {exc}")
    if not leftovers:
        # Only this call knew the new change's id: once the bookmarks it moved are
        # back, nothing can point at it.
        await _changes.delete_change(store, child.change_id)
    if leftovers:
        raise ConflictError(
            "checkpoint failed and could not be undone entirely: " + "; ".join(leftovers)
        )


def _touches(op: Op, rel: paths.RelPath) -> bool:
    return any(
        paths.is_ancestor(p, rel) or paths.is_ancestor(rel, p)
        for p in ((op.src, op.dst) if isinstance(op, Mv | Cp) else (op.path,))
    )


async def change_history(
    store: RepoStore, change_id: str, rel: paths.RelPath
) -> list[HistoryEntry]:
    """Decode the log of ``change_id`` and return the entries touching ``rel``."""
    if change_id == ROOT_CHANGE_ID:
        return []
    t, log = store.gateway, store.log(change_id)
    prefix = f"/{store.org}/{store.name}"
    out: list[HistoryEntry] = []
    last = await t.last_seq(store.token, log)
    if not last:
        return out
    sub = await t.subscribe(store.token, log, after_seq=0)
    try:
        async for delivery in sub:
            try:
                entry = decode_entry(delivery.payload)
            except CodecError as exc:
                raise LogCorruptError(change_id, delivery.seq, str(exc)) from exc
            op = entry.op
            if _touches(op, rel):
                names = (op.src, op.dst) if isinstance(op, Mv | Cp) else (op.path,)
                out.append(
                    HistoryEntry(
                        seq=delivery.seq,
                        time_ms=delivery.time_ms,
                        author=entry.author,
                        op=_op_name(op),
                        paths=tuple(_abs(prefix, p) for p in names),
                        metadata=op.items if isinstance(op, SetMetadata) else (),
                    )
                )
            if delivery.seq >= last:
                break
    finally:
        await sub.aclose()
    return out


def _op_name(op: Op) -> str:
    if isinstance(op, SetMetadata) and op.clear and not op.items:
        return "clear_metadata"
    return OP_NAMES[type(op)]


async def read_at(repos: MountedRepos, path: str, at: int) -> bytes:
    """Return the bytes of ``path`` once the mounted change had folded sequence ``at``.

    Symlinks in the past tree are followed inside the repo.

    Raises:
        FileNotFoundError: the path did not exist then.
        IsADirectoryError: it was a directory.
    """
    rm, node = await node_at(repos, path, at)
    if isinstance(node, DirNode):
        raise os_error(errno.EISDIR, path)
    assert isinstance(node, FileNode)
    return await rm.blobs.value_bytes(node.value)


async def node_at(repos: MountedRepos, path: str, at: int) -> tuple[RepoMount, AnyNode]:
    """Return the repo and the node of ``path`` once the change had folded sequence ``at``.

    Symlinks in the past tree are followed inside the repo; the node is never a symlink.

    Raises:
        InvalidOptionsError: ``at`` is not a sequence number.
        FileNotFoundError: the path did not exist then.
    """
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise InvalidOptionsError("at must be a sequence number (int >= 0)")
    rm, rel = repos.locate(path)
    await rm.wait_synced()
    if rm.replica.seq <= at:
        tree = rm.replica.state.tree  # nothing after ``at`` is folded yet
    else:
        with fs_errors(path):
            tree = (await _changes.current_state(rm.store, rm.change_id, at=at)).state.tree
    return rm, _lookup(tree, rel, path, rm.prefix)


def _lookup(tree: Tree, rel: paths.RelPath, path: str, prefix: str) -> AnyNode:
    """Return the node at ``rel``, following symlinks that stay inside the repo.

    Raises:
        FileNotFoundError: a component is missing, or a symlink leaves the repo.
        OSError: ELOOP after `MAX_SYMLINK_HOPS` symlinks.
    """
    queue = list(rel)
    parts: list[str] = []
    hops = 0
    node: AnyNode = tree.root
    while queue:
        name = queue.pop(0)
        if name == "..":
            parts = parts[:-1]
            node = tree.lookup(tuple(parts)) or tree.root
            continue
        child = node.children.get(name) if isinstance(node, DirNode) else None
        if child is None:
            raise os_error(errno.ENOENT, path)
        if not isinstance(child, SymlinkNode):
            parts.append(name)
            node = child
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise os_error(errno.ELOOP, path)
        target = child.target
        if target.startswith("/"):
            target = paths.normalize(target)
            if target != prefix and not target.startswith(prefix + "/"):
                raise os_error(errno.ENOENT, path, "the symlink leaves the repo")
            target, parts = target[len(prefix) :], []
        queue[:0] = [p for p in target.split("/") if p not in ("", ".")]
        node = tree.lookup(tuple(parts)) or tree.root
    return node


def _abs(prefix: str, rel: paths.RelPath) -> str:
    return prefix + ("/" + paths.to_str(rel) if rel else "")

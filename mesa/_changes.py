"""Changes as jj sees them: records, trees, seals, ancestry, infos and diffs.

A change's **base tree** is the tree its parents left it (see docs/versioning.md): for
one parent, the parent's folded state at the sequence it was **sealed** at when the
child was forked (a snapshot blob named in the child's record); for a merge change,
the merged tree of its parents (a blob too); for a child of the root change (the
first change of a repo), the empty tree. A change's **current tree** is its base plus
its own log folded up to now. Everything here works without a mount: a short-lived
replica folds a change from its newest snapshot (or its base) and the tail of its log.

Nothing here changes a mount; `mesa._bookmarks` and the ``fs.changes`` namespace
(`mesa._history`) build on these functions.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Literal

from engine import paths
from engine.diff import PatchFile, conflicted_paths, diff_trees, line_counts, render_patch
from engine.errors import CodecError
from engine.fold import ChangeState
from engine.ids import ROOT_CHANGE_ID, is_change_id
from engine.replica import CorruptEntryError, FoldFailedError, Replica
from engine.snapshot import decode_snapshot, encode_snapshot
from engine.tree import FileNode, SymlinkNode, Tree
from engine.treemerge import fresh_state
from mesa import _snapshots
from mesa._blobs import BlobCache
from mesa._gateway import GatewaySubscription
from mesa._records import BaseRef, ChangeRecord, Seal, change_key
from mesa._store import RepoStore
from mesa.errors import (
    ApiError,
    ConflictError,
    FoldError,
    InvalidOptionsError,
    LogCorruptError,
    MesaError,
    NotFoundError,
    ServerError,
)

#: The author recorded on entries folded by a scratch replica (it never issues any).
SCRATCH_AUTHOR = "scratch"
UPDATE_ATTEMPTS = 5


def check_change_id(change_id: object) -> str:
    """Return ``change_id`` if it is a change id, else raise `InvalidOptionsError`."""
    if not is_change_id(change_id):
        raise InvalidOptionsError(f"not a change id (32 chars in k..z): {change_id!r}")
    assert isinstance(change_id, str)
    return change_id


def stopped_at(change_id: str, exc: CorruptEntryError) -> LogCorruptError | FoldError:
    """Return the public error for a replica of ``change_id`` stopped at an entry.

    An entry that does not decode is `LogCorruptError`; one that decoded but whose fold
    raised is `FoldError`. A live mount (`mesa._mount`) and a fresh fold of the log
    (a mount starting, ``changes.get``) report the same entry with the same error.
    """
    broken: LogCorruptError | FoldError
    if isinstance(exc, FoldFailedError):
        broken = FoldError(change_id, exc.seq, f"the entry could not be folded: {exc.reason}")
    else:
        broken = LogCorruptError(change_id, exc.seq, exc.reason)
    broken.__cause__ = exc
    return broken


# -- records -----------------------------------------------------------------------------


ROOT_RECORD = ChangeRecord(ROOT_CHANGE_ID, parents=())


async def get_change(store: RepoStore, change_id: str) -> tuple[ChangeRecord, int] | None:
    """Return a change's record and KV revision (the root's is virtual: revision 0)."""
    if change_id == ROOT_CHANGE_ID:
        return ROOT_RECORD, 0
    entry = await store.gateway.kv_get(
        store.token, change_key(store.org, store.name, check_change_id(change_id))
    )
    return None if entry is None else (ChangeRecord.decode(entry.value), entry.revision)


async def require_change(store: RepoStore, change_id: str) -> ChangeRecord:
    """Return a change's record, or raise `NotFoundError`."""
    found = await get_change(store, change_id)
    if found is None:
        raise NotFoundError(f"change {change_id} not found in {store.org}/{store.name}")
    return found[0]


async def put_new_change(store: RepoStore, record: ChangeRecord) -> None:
    """Store a new change record (it must not exist)."""
    await store.gateway.kv_put(
        store.token,
        change_key(store.org, store.name, record.change_id),
        record.encode(),
        expected_revision=0,
    )


async def delete_change(store: RepoStore, change_id: str) -> None:
    """Delete a change record (best effort: used to undo a create nobody saw)."""
    with contextlib.suppress(MesaError):
        await store.gateway.kv_delete(store.token, change_key(store.org, store.name, change_id))


async def describe(store: RepoStore, change_id: str, message: str, now_ms: int) -> ChangeRecord:
    """Set a change's message by compare-and-set, retrying a lost race a few times."""
    for _ in range(UPDATE_ATTEMPTS):
        found = await get_change(store, change_id)
        if found is None:
            raise NotFoundError(f"change {change_id} not found in {store.org}/{store.name}")
        record, revision = found
        updated = ChangeRecord(
            record.change_id,
            record.parents,
            message,
            record.author,
            record.created_at_ms,
            record.base,
            now_ms,
            record.extra,
        )
        try:
            await store.gateway.kv_put(
                store.token,
                change_key(store.org, store.name, change_id),
                updated.encode(),
                expected_revision=revision,
            )
        except ConflictError:
            continue
        return updated
    raise ConflictError(f"change {change_id} kept changing while it was described; retry")


# -- trees -------------------------------------------------------------------------------


@dataclass
class Folded:
    """A change's state folded by a scratch replica, and how many entries it holds."""

    state: ChangeState
    entries: int


async def base_state(store: RepoStore, record: ChangeRecord) -> ChangeState:
    """Return the state a change starts from: its base tree, nothing folded.

    Raises:
        ServerError: the base snapshot is missing or corrupt (the change cannot be read).
    """
    if record.base is None:
        return ChangeState(window_ms=store.window_ms)
    try:
        data = await _snapshots.load_blob(
            store.gateway, store.token, store.org, store.name, record.base.digest
        )
        sealed = decode_snapshot(data)
    except (NotFoundError, CodecError) as exc:
        raise ServerError(f"the base of change {record.change_id} is unreadable: {exc}") from exc
    return fresh_state(sealed.tree, store.window_ms)


async def start_state(store: RepoStore, record: ChangeRecord, *, at: int | None = None) -> Folded:
    """Return where a fold of a change starts: its newest snapshot (at or before ``at``)."""
    if record.change_id != ROOT_CHANGE_ID:
        loaded = await _snapshots.load(
            store.gateway,
            store.token,
            store.org,
            store.name,
            record.change_id,
            store.window_ms,
            at=at,
        )
        if loaded is not None:
            return Folded(loaded.state, loaded.entries)
    return Folded(await base_state(store, record), 0)


async def fold_tail(
    store: RepoStore, change_id: str, folded: Folded, *, upto: int | None = None
) -> Folded:
    """Fold the change's log after ``folded`` up to now (or up to sequence ``upto``).

    Raises:
        LogCorruptError: an entry does not decode.
        FoldError: an entry decoded but could not be folded.
    """
    if change_id == ROOT_CHANGE_ID:
        return folded
    t, log = store.gateway, store.log(change_id)
    last = await t.last_seq(store.token, log)
    target = last if upto is None else min(last, upto)
    if folded.state.seq >= target:
        return folded
    replica = Replica(SCRATCH_AUTHOR, folded.state)
    entries = folded.entries
    sub = await t.subscribe(store.token, log, after_seq=folded.state.seq)
    try:
        async for delivery in sub:
            if delivery.seq > target:
                break
            try:
                got = replica.receive(
                    delivery.seq, delivery.prev_seq, delivery.time_ms, delivery.payload
                )
            except CorruptEntryError as exc:
                raise stopped_at(change_id, exc) from exc
            entries += len(got)
            if replica.seq >= target:
                break
    finally:
        await sub.aclose()
    return Folded(replica.state, entries)


@dataclass
class Live:
    """A change folded to the end of its log, with the subscription that continues it."""

    change_id: str
    replica: Replica
    entries: int
    sub: GatewaySubscription


async def open_live(store: RepoStore, change_id: str, author: str) -> Live:
    """Fold ``change_id`` from its newest snapshot (or base) to the end of its log.

    The subscription stays open for the caller to keep folding (a mount's pump).

    Raises:
        InvalidOptionsError: ``change_id`` is the root change (it cannot be edited).
        NotFoundError: no such change.
        LogCorruptError: an entry of its log does not decode.
        FoldError: an entry of its log decoded but could not be folded.
    """
    if change_id == ROOT_CHANGE_ID:
        raise InvalidOptionsError("the root change cannot be checked out; make a new change")
    record = await require_change(store, change_id)
    folded = await start_state(store, record)
    replica = Replica(author, folded.state)
    t, log = store.gateway, store.log(change_id)
    last = await t.last_seq(store.token, log)
    sub = await t.subscribe(store.token, log, after_seq=replica.seq)
    try:
        entries = folded.entries + await _catch_up(replica, sub, change_id, last)
    except BaseException:
        await sub.aclose()
        raise
    return Live(change_id, replica, entries, sub)


async def _catch_up(replica: Replica, sub: GatewaySubscription, change_id: str, last: int) -> int:
    """Fold deliveries of ``sub`` until ``last``; return how many entries were folded."""
    entries = 0
    deliveries = sub.__aiter__()
    while replica.seq < last:
        try:
            d = await deliveries.__anext__()
        except StopAsyncIteration:
            raise ApiError(f"the log of change {change_id} ended while it was read") from None
        try:
            entries += len(replica.receive(d.seq, d.prev_seq, d.time_ms, d.payload))
        except CorruptEntryError as exc:
            raise stopped_at(change_id, exc) from exc
        if replica.broken is not None:
            broken = replica.broken
            raise stopped_at(change_id, broken) from broken
    return entries


async def current_state(store: RepoStore, change_id: str, *, at: int | None = None) -> Folded:
    """Return a change's state now (or as of sequence ``at``), without a mount."""
    record = await require_change(store, change_id)
    return await fold_tail(store, change_id, await start_state(store, record, at=at), upto=at)


async def seal(store: RepoStore, change_id: str, folded: Folded) -> tuple[Seal, int]:
    """Store ``folded`` (the change's state now) as a snapshot; return its seal and size."""
    if change_id == ROOT_CHANGE_ID:
        return Seal(ROOT_CHANGE_ID, 0, ""), 0
    data = encode_snapshot(folded.state)
    record = await _snapshots.seal(
        store.gateway,
        store.token,
        store.org,
        store.name,
        change_id,
        data=data,
        seq=folded.state.seq,
        entries=folded.entries,
        now_ms=store.ctx.clock.now_ms(),
    )
    return Seal(change_id, folded.state.seq, record.digest), record.size


async def create_child(
    store: RepoStore, parent: str, folded: Folded, *, message: str, author: str
) -> ChangeRecord:
    """Seal ``parent`` at ``folded`` and store a new change forked from it."""
    now_ms = store.ctx.clock.now_ms()
    base: BaseRef | None = None
    if parent != ROOT_CHANGE_ID:
        sealed, size = await seal(store, parent, folded)
        base = BaseRef(sealed.digest, size, (sealed,))
    record = ChangeRecord(
        store.ctx.new_change_id(),
        parents=(parent,),
        message=message,
        author=author,
        created_at_ms=now_ms,
        base=base,
        updated_at_ms=now_ms,
    )
    await put_new_change(store, record)
    return record


async def sealed_tree(store: RepoStore, sealed: Seal) -> Tree:
    """Return the tree a seal names (the empty tree for the root or a missing blob ref)."""
    if not sealed.digest:
        return Tree()
    try:
        data = await _snapshots.load_blob(
            store.gateway, store.token, store.org, store.name, sealed.digest
        )
        return decode_snapshot(data).tree
    except (NotFoundError, CodecError) as exc:
        raise ServerError(f"sealed state of {sealed.change} is unreadable: {exc}") from exc


# -- ancestry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """How a change reaches an ancestor: the distance, and its earliest seal of it.

    ``seal`` is None for the change itself (its current state, not a sealed one).
    """

    distance: int
    seal: Seal | None


async def ancestry(store: RepoStore, start: str) -> dict[str, Reach]:
    """Return every ancestor of ``start`` (itself included, the root too) and its reach.

    An ancestor reached along several paths keeps the shortest distance and the seal
    with the lowest sequence: the oldest state of it the start descends from.
    """
    found: dict[str, Reach] = {start: Reach(0, None)}
    queue = deque([start])
    while queue:
        change = queue.popleft()
        record = await require_change(store, change)
        distance = found[change].distance + 1
        for parent in record.parents:
            sealed = record.base.seal_of(parent) if record.base is not None else None
            sealed = sealed if sealed is not None else Seal(parent, 0, "")
            known = found.get(parent)
            if known is None:
                found[parent] = Reach(distance, sealed)
                queue.append(parent)
            elif known.seal is not None and sealed.seq < known.seal.seq:
                found[parent] = Reach(known.distance, sealed)
    return found


async def is_ancestor(store: RepoStore, ancestor: str, descendant: str) -> bool:
    """Return whether ``ancestor`` is ``descendant`` or one of its ancestors.

    Walks parents breadth-first from ``descendant`` and stops at ``ancestor``.
    """
    if ancestor in (descendant, ROOT_CHANGE_ID):
        return True
    seen = {descendant}
    queue = deque([descendant])
    while queue:
        for parent in (await require_change(store, queue.popleft())).parents:
            if parent == ancestor:
                return True
            if parent not in seen and parent != ROOT_CHANGE_ID:
                seen.add(parent)
                queue.append(parent)
    return False


async def reachable(store: RepoStore, start: str, limit: int) -> list[ChangeRecord]:
    """Return the changes reachable from ``start`` (the root aside), newest first."""
    records = [
        await require_change(store, change)
        for change in await ancestry(store, start)
        if change != ROOT_CHANGE_ID
    ]
    records.sort(key=lambda r: (-r.created_at_ms, r.change_id))
    return records[:limit] if limit else records


# -- infos -------------------------------------------------------------------------------


def commit_oid(change_id: str, tree: Tree) -> str:
    """Return the change's "commit oid": a 40-hex hash of its id and current tree.

    We have no git commits: the oid changes whenever the change's tree changes, and
    two changes never share one.
    """
    return hashlib.sha1(
        f"mesa-change {change_id}\ntree {tree.hash()}\n".encode(), usedforsecurity=False
    ).hexdigest()


@dataclass(frozen=True)
class ChangeInfo:
    """A change as the SDK reports it (``commit_oid`` per `commit_oid`)."""

    change_id: str
    commit_oid: str
    parents: tuple[str, ...]
    message: str
    author: str
    created_at_ms: int
    updated_at_ms: int
    is_conflicted: bool
    conflicted_paths: tuple[str, ...]
    seq: int


def info_of(record: ChangeRecord, state: ChangeState) -> ChangeInfo:
    """Return the info of a change whose current state is ``state``."""
    conflicted = tuple(paths.to_str(p) for p in conflicted_paths(state.tree))
    return ChangeInfo(
        change_id=record.change_id,
        commit_oid=commit_oid(record.change_id, state.tree),
        parents=record.parents,
        message=record.message,
        author=record.author,
        created_at_ms=record.created_at_ms,
        updated_at_ms=record.updated_at_ms or record.created_at_ms,
        is_conflicted=bool(conflicted),
        conflicted_paths=conflicted,
        seq=state.seq,
    )


async def change_info(store: RepoStore, change_id: str) -> ChangeInfo:
    """Return the info of a change, folding its current tree."""
    record = await require_change(store, change_id)
    folded = await fold_tail(store, change_id, await start_state(store, record))
    return info_of(record, folded.state)


# -- diffs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffStats:
    """Totals of a diff."""

    entries: int
    additions: int
    deletions: int
    conflicted_entries: int


@dataclass(frozen=True)
class FileDiff:
    """One path that differs: status, kinds, modes, line counts, and whether it conflicts."""

    path: str
    status: Literal["added", "modified", "deleted"]
    old_kind: str | None
    new_kind: str | None
    old_mode: int | None
    new_mode: int | None
    additions: int
    deletions: int
    is_conflicted: bool


@dataclass(frozen=True)
class ChangeDiff:
    """A diff between two trees: structured entries and the unified patch.

    Conflicted paths are only in ``conflicted_entries``; the patch shows every path,
    conflicted files with their jj markers inline.
    """

    base_change_id: str
    head_change_id: str
    stats: DiffStats
    entries: tuple[FileDiff, ...]
    conflicted_entries: tuple[FileDiff, ...]
    patch: str


async def diff(
    store: RepoStore, base_id: str, base: Tree, head_id: str, head: Tree, *, patch: bool = True
) -> ChangeDiff:
    """Return the diff from tree ``base`` (of ``base_id``) to ``head`` (of ``head_id``)."""
    blobs = store.blobs()
    files: list[PatchFile] = []
    out: list[FileDiff] = []
    for entry in diff_trees(base, head):
        old = await _side_bytes(blobs, base, entry.path)
        new = await _side_bytes(blobs, head, entry.path)
        files.append(PatchFile(entry, old, new))
        added, deleted = line_counts(old, new)
        out.append(
            FileDiff(
                path=paths.to_str(entry.path),
                status=entry.status,
                old_kind=entry.old.kind if entry.old else None,
                new_kind=entry.new.kind if entry.new else None,
                old_mode=entry.old.mode if entry.old else None,
                new_mode=entry.new.mode if entry.new else None,
                additions=added,
                deletions=deleted,
                is_conflicted=entry.is_conflicted,
            )
        )
    stats = DiffStats(
        entries=len(out),
        additions=sum(f.additions for f in out),
        deletions=sum(f.deletions for f in out),
        conflicted_entries=sum(1 for f in out if f.is_conflicted),
    )
    text = render_patch(files).decode("utf-8", "replace") if patch else ""
    return ChangeDiff(
        base_id,
        head_id,
        stats,
        tuple(f for f in out if not f.is_conflicted),
        tuple(f for f in out if f.is_conflicted),
        text,
    )


async def _side_bytes(blobs: BlobCache, tree: Tree, path: paths.RelPath) -> bytes:
    node = tree.lookup(path)
    if isinstance(node, FileNode):
        return await blobs.value_bytes(node.value)
    if isinstance(node, SymlinkNode):
        return node.target.encode("utf-8", "surrogateescape")
    return b""

"""Bookmarks: named pointers to changes, moved only by compare-and-set; and merges.

Every update of a bookmark record is a compare-and-set on the revision read just
before (`cas_move`), so two writers racing on one bookmark end with one winner and a
retryable `ConflictError` for the other, never a lost update. A move must advance
history (the new change descends from the current one, following parents) unless
``allow_backwards``. After a successful update a notice goes to the bookmark's channel
(`mesa._records.bookmark_channel`); `BookmarkFollower` is the mount's side of it.

``merge`` is 3-way: base = the nearest common ancestor change, as the sources had it
when they forked from it; left = the target's current tree; right = the source's. A
clean (or allowed) result becomes a merge change (parents target and source, its
merged tree as base) and the target bookmark moves to it; a rejected one stores
nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from engine.ids import ROOT_CHANGE_ID
from engine.paths import to_str
from engine.snapshot import encode_snapshot
from engine.tree import Tree
from engine.treemerge import fresh_state, merge_trees
from mesa import _changes
from mesa._args import message_arg
from mesa._context import Context
from mesa._gateway import GatewaySubscription
from mesa._records import (
    BaseRef,
    BookmarkRecord,
    ChangeRecord,
    bookmark_channel,
    bookmark_key,
    bookmark_name_from_key,
    bookmarks_prefix,
    decode_notice,
    encode_notice,
)
from mesa._store import RepoStore, open_store
from mesa.errors import (
    ConflictError,
    InvalidOptionsError,
    MesaError,
    NotFoundError,
    ValidationError,
)

log = logging.getLogger("mesa")

MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Bookmark:
    """A bookmark: its name, the change it points at, and whether it is the repo's default."""

    name: str
    change_id: str
    is_default: bool


@dataclass(frozen=True)
class MergeResult:
    """What `Bookmarks.merge` did.

    ``merge_type`` is ``no_op`` when target and source point at the same change, or
    the target already contains the source (an ancestor unchanged since the target's
    line forked from or merged it), else ``merge_commit`` (every divergent merge makes
    a merge change, as in jj).
    ``conflict_paths`` lists the paths that conflict in the result (repo-relative).
    """

    merge_type: Literal["merge_commit", "no_op"]
    is_conflicted: bool
    change_id: str
    commit_oid: str
    target: str
    source: str
    source_deleted: bool
    conflict_paths: tuple[str, ...]


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid bookmark name, else raise `InvalidOptionsError`."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or any(ord(c) < 32 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in name)
    ):
        # A lone surrogate cannot be stored (it has no UTF-8 encoding).
        raise InvalidOptionsError(f"invalid bookmark name: {name!r}")
    return name


# -- records -----------------------------------------------------------------------------


async def get_record(store: RepoStore, name: str) -> tuple[BookmarkRecord, int] | None:
    """Return a bookmark's record and revision, or None."""
    entry = await store.gateway.kv_get(
        store.token, bookmark_key(store.org, store.name, check_name(name))
    )
    return None if entry is None else (BookmarkRecord.decode(entry.value), entry.revision)


async def require_record(store: RepoStore, name: str) -> tuple[BookmarkRecord, int]:
    """Return a bookmark's record and revision, or raise `NotFoundError`."""
    found = await get_record(store, name)
    if found is None:
        raise NotFoundError(f"bookmark {name!r} not found in {store.org}/{store.name}")
    return found


def public(store: RepoStore, record: BookmarkRecord) -> Bookmark:
    """Return the public view of a bookmark record."""
    return Bookmark(record.name, record.change_id, record.name == store.repo.default_bookmark)


async def try_create(store: RepoStore, name: str, change_id: str) -> Bookmark | None:
    """Create a bookmark at an existing change; None if the name is taken."""
    await _changes.require_change(store, _changes.check_change_id(change_id))
    record = BookmarkRecord(check_name(name), change_id)
    try:
        revision = await store.gateway.kv_put(
            store.token,
            bookmark_key(store.org, store.name, name),
            record.encode(),
            expected_revision=0,
        )
    except ConflictError:
        return None
    await notify(store, name, change_id, revision)
    return public(store, record)


async def cas_move(store: RepoStore, name: str, change_id: str, revision: int) -> Bookmark:
    """Point ``name`` at ``change_id`` if its revision is still ``revision``.

    Raises:
        ConflictError: the bookmark changed since ``revision`` was read (retry).
    """
    record = BookmarkRecord(name, change_id)
    try:
        new_revision = await store.gateway.kv_put(
            store.token,
            bookmark_key(store.org, store.name, name),
            record.encode(),
            expected_revision=revision,
        )
    except ConflictError as exc:
        raise ConflictError(
            f"bookmark {name!r} moved concurrently ({exc}); read it again and retry"
        ) from exc
    await notify(store, name, change_id, new_revision)
    return public(store, record)


async def move(store: RepoStore, name: str, change_id: str, *, allow_backwards: bool) -> Bookmark:
    """Move ``name`` to ``change_id``: fast-forward only unless ``allow_backwards``.

    Raises:
        NotFoundError: no such bookmark or change.
        ValidationError: the move is not a fast-forward and ``allow_backwards`` is False.
        ConflictError: the bookmark moved concurrently (retry).
    """
    record, revision = await require_record(store, name)
    await _changes.require_change(store, _changes.check_change_id(change_id))
    if record.change_id == change_id:
        return public(store, record)
    if not allow_backwards and not await _changes.is_ancestor(store, record.change_id, change_id):
        raise ValidationError(
            f"moving bookmark {name!r} from {record.change_id} to {change_id} does not advance "
            "history (not a descendant); pass allow_backwards=True to move it anyway",
            body={"error": {"code": "NOT_FAST_FORWARD", "message": "not a fast-forward"}},
        )
    return await cas_move(store, name, change_id, revision)


async def delete(store: RepoStore, name: str, *, revision: int | None = None) -> None:
    """Delete a bookmark (compare-and-set when ``revision`` is given).

    Raises:
        ValidationError: it is the repo's default bookmark.
        NotFoundError: no such bookmark.
        ConflictError: it changed since ``revision``.
    """
    if check_name(name) == store.repo.default_bookmark:
        raise ValidationError(f"bookmark {name!r} is the repo's default and cannot be deleted")
    try:
        await store.gateway.kv_delete(
            store.token, bookmark_key(store.org, store.name, name), expected_revision=revision
        )
    except NotFoundError as exc:
        raise NotFoundError(f"bookmark {name!r} not found in {store.org}/{store.name}") from exc
    except ConflictError as exc:
        raise ConflictError(f"bookmark {name!r} changed concurrently; retry") from exc
    await notify(store, name, None, 0)


async def list_records(
    store: RepoStore, glob: str | None = None
) -> list[tuple[BookmarkRecord, int]]:
    """Return the bookmarks (matching ``glob``, fnmatch style), sorted by name.

    Raises:
        InvalidOptionsError: ``glob`` is neither a str nor None.
    """
    if glob is not None and not isinstance(glob, str):
        raise InvalidOptionsError(f"glob must be a str or None, not {type(glob).__name__}")
    keys = await store.gateway.kv_keys(store.token, bookmarks_prefix(store.org, store.name))
    out: list[tuple[BookmarkRecord, int]] = []
    for key in keys:
        name = bookmark_name_from_key(key)
        if glob is not None and not fnmatch.fnmatchcase(name, glob):
            continue
        found = await get_record(store, name)
        if found is not None:
            out.append(found)
    out.sort(key=lambda item: item[0].name)
    return out


async def notify(store: RepoStore, name: str, change_id: str | None, revision: int) -> None:
    """Announce on the bookmark's channel that it moved (best effort: followers re-read)."""
    channel = bookmark_channel(store.org, store.name, name)
    try:
        await store.gateway.append(
            store.token,
            channel,
            encode_notice(name, change_id, revision),
            msg_id=f"bookmark.{channel.change}.{revision}.{change_id}",
        )
    except MesaError as exc:
        log.warning("announcing the move of bookmark %r failed: %s", name, exc)


# -- following ---------------------------------------------------------------------------

Moved = Callable[[str, str | None], Awaitable[None]]


class BookmarkFollower:
    """Calls ``on_moved(name, change_id)`` whenever bookmark ``name`` may have moved.

    It subscribes to the bookmark's channel, then reads the bookmark once (closing the
    gap between resolving it and subscribing) and again after every notice; the KV
    record is the truth, a notice is only a wake-up. ``change_id`` is None once the
    bookmark is deleted.
    """

    def __init__(self, store: RepoStore, name: str, on_moved: Moved) -> None:
        self.store = store
        self.name = name
        self._on_moved = on_moved
        self._sub: GatewaySubscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe to the channel and start watching."""
        t, channel = (
            self.store.gateway,
            bookmark_channel(self.store.org, self.store.name, self.name),
        )
        last = await t.last_seq(self.store.token, channel)
        self._sub = await t.subscribe(self.store.token, channel, after_seq=last)
        self._task = asyncio.create_task(self._run(self._sub), name=f"mesa-follow-{self.name}")

    async def stop(self) -> None:
        """Stop watching (safe from inside ``on_moved``)."""
        if self._sub is not None:
            await self._sub.aclose()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, sub: GatewaySubscription) -> None:
        await self._check()
        try:
            async for delivery in sub:
                with contextlib.suppress(ValueError, KeyError):
                    if decode_notice(delivery.payload)[0] != self.name:
                        continue
                await self._check()
        except MesaError as exc:
            log.warning("following bookmark %r stopped: %s", self.name, exc)

    async def _check(self) -> None:
        try:
            found = await get_record(self.store, self.name)
            await self._on_moved(self.name, None if found is None else found[0].change_id)
        except (MesaError, OSError) as exc:
            log.warning("following bookmark %r: %s", self.name, exc)
        except Exception:
            log.exception("following bookmark %r failed", self.name)


# -- merge -------------------------------------------------------------------------------


async def _merge_base(store: RepoStore, target: str, source: str) -> Tree:
    """Return the tree of the nearest common ancestor, as the sides forked from it.

    The nearest common ancestor has the smallest total distance from both sides (ties
    broken by id). Its tree is its state at the earliest seal either side made of it;
    a side that is the ancestor itself contributes its current state only if the other
    side forked from it (that side's seal is then the base).
    """
    left, right = await _changes.ancestry(store, target), await _changes.ancestry(store, source)
    common = left.keys() & right.keys()
    best = min(common, key=lambda c: (left[c].distance + right[c].distance, c))
    seals = [r.seal for r in (left[best], right[best]) if r.seal is not None]
    if best == ROOT_CHANGE_ID or not seals:
        return Tree()
    return await _changes.sealed_tree(store, min(seals, key=lambda s: s.seq))


async def _contains(store: RepoStore, target: str, source: str) -> bool:
    """Return whether ``target`` already holds ``source`` as it is now.

    True when ``source`` is an ancestor of ``target`` and some descendant on the way
    was forked from (or merged) ``source``'s current state: nothing written to
    ``source`` since is missing from ``target``.
    """
    if source == ROOT_CHANGE_ID:
        return True
    now = (await _changes.current_state(store, source)).state.seq
    seen = {target}
    queue = [target]
    while queue:
        record = await _changes.require_change(store, queue.pop())
        for parent in record.parents:
            if parent == source:
                sealed = record.base.seal_of(parent) if record.base is not None else None
                if sealed is not None and sealed.seq >= now:
                    return True
            elif parent not in seen and parent != ROOT_CHANGE_ID:
                seen.add(parent)
                queue.append(parent)
    return False


async def merge(
    store: RepoStore,
    *,
    target: str,
    source: str,
    allow_conflicted: bool,
    delete_source: bool,
    message: str | None,
    author: str,
) -> MergeResult:
    """Merge bookmark ``source`` into bookmark ``target`` (see module docstring).

    Raises:
        NotFoundError: a bookmark is missing.
        ValidationError: ``delete_source`` names the default bookmark.
        ConflictError: the merge conflicts and ``allow_conflicted`` is False (body
            code ``MERGE_CONFLICT`` with ``details.conflict_paths``; nothing stored), or
            the target bookmark moved meanwhile (retry).
    """
    if delete_source and source == store.repo.default_bookmark:
        raise ValidationError(f"bookmark {source!r} is the repo's default and cannot be deleted")
    target_record, target_rev = await require_record(store, target)
    source_record, source_rev = await require_record(store, source)
    left_id, right_id = target_record.change_id, source_record.change_id
    if left_id == right_id or await _contains(store, left_id, right_id):
        info = await _changes.change_info(store, left_id)
        deleted = delete_source and await _delete_quietly(store, source, source_rev)
        return MergeResult(
            merge_type="no_op",
            is_conflicted=info.is_conflicted,
            change_id=left_id,
            commit_oid=info.commit_oid,
            target=target,
            source=source,
            source_deleted=deleted,
            conflict_paths=info.conflicted_paths,
        )
    base = await _merge_base(store, left_id, right_id)
    left = await _changes.current_state(store, left_id)
    right = await _changes.current_state(store, right_id)
    result = merge_trees(base, left.state.tree, right.state.tree)
    conflict_paths = tuple(to_str(p) for p in result.conflicts)
    if conflict_paths and not allow_conflicted:
        raise _merge_conflict(target, source, conflict_paths)
    record = await _store_merge(store, left_id, left, right_id, right, result.tree, message, author)
    try:
        await cas_move(store, target, record.change_id, target_rev)
    except ConflictError:
        await _changes.delete_change(store, record.change_id)
        raise
    deleted = delete_source and await _delete_quietly(store, source, source_rev)
    oid = _changes.commit_oid(record.change_id, result.tree)
    return MergeResult(
        merge_type="merge_commit",
        is_conflicted=bool(conflict_paths),
        change_id=record.change_id,
        commit_oid=oid,
        target=target,
        source=source,
        source_deleted=deleted,
        conflict_paths=conflict_paths,
    )


def _merge_conflict(target: str, source: str, conflict_paths: tuple[str, ...]) -> ConflictError:
    """Return the error of a rejected merge: code ``MERGE_CONFLICT``, the conflicted paths."""
    text = f"merging {source!r} into {target!r} conflicts in {len(conflict_paths)} path(s)"
    return ConflictError(
        text,
        body={
            "error": {
                "code": "MERGE_CONFLICT",
                "message": text,
                "details": {"conflict_paths": list(conflict_paths)},
            }
        },
    )


async def _store_merge(
    store: RepoStore,
    left_id: str,
    left: _changes.Folded,
    right_id: str,
    right: _changes.Folded,
    tree: Tree,
    message: str | None,
    author: str,
) -> ChangeRecord:
    """Seal both sides, store the merged tree as a base, and store the merge change."""
    left_seal, _ = await _changes.seal(store, left_id, left)
    right_seal, _ = await _changes.seal(store, right_id, right)
    data = encode_snapshot(fresh_state(tree, store.window_ms))
    digest = await store.gateway.put_blob(store.token, store.org, store.name, data)
    now_ms = store.ctx.clock.now_ms()
    record = ChangeRecord(
        store.ctx.new_change_id(),
        parents=(left_id, right_id),
        message=message if message is not None else "",
        author=author,
        created_at_ms=now_ms,
        base=BaseRef(digest, len(data), (left_seal, right_seal)),
        updated_at_ms=now_ms,
    )
    await _changes.put_new_change(store, record)
    return record


async def _delete_quietly(store: RepoStore, name: str, revision: int) -> bool:
    """Delete the merged source bookmark if it did not move; return whether it went."""
    try:
        await delete(store, name, revision=revision)
    except (ConflictError, NotFoundError) as exc:
        log.warning("the source bookmark %r was not deleted: %s", name, exc)
        return False
    return True


# -- mesa.bookmarks ----------------------------------------------------------------------


class Bookmarks:
    """``mesa.bookmarks``: the REST-like bookmark API (errors are `ApiError` subclasses)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def _store(self, repo: str) -> RepoStore:
        return await open_store(self._ctx, self._ctx.management_token(), repo)

    async def list(self, repo: str, *, glob: str | None = None) -> list[Bookmark]:
        """Return the repo's bookmarks, sorted by name, optionally filtered by ``glob``."""
        store = await self._store(repo)
        return [public(store, record) for record, _ in await list_records(store, glob)]

    async def get(self, repo: str, name: str) -> Bookmark:
        """Return bookmark ``name`` (`NotFoundError` if missing)."""
        store = await self._store(repo)
        return public(store, (await require_record(store, name))[0])

    async def create(self, repo: str, name: str, *, change_id: str) -> Bookmark:
        """Create bookmark ``name`` at ``change_id`` (`ConflictError` if it exists)."""
        store = await self._store(repo)
        created = await try_create(store, name, change_id)
        if created is None:
            raise ConflictError(f"bookmark {name!r} already exists in {store.org}/{repo}")
        return created

    async def move(
        self, repo: str, name: str, *, change_id: str, allow_backwards: bool = False
    ) -> Bookmark:
        """Move ``name`` to ``change_id``; it must advance history unless ``allow_backwards``."""
        return await move(await self._store(repo), name, change_id, allow_backwards=allow_backwards)

    async def delete(self, repo: str, name: str) -> None:
        """Delete bookmark ``name`` (not the default one)."""
        await delete(await self._store(repo), name)

    async def merge(
        self,
        repo: str,
        *,
        target: str,
        source: str,
        allow_conflicted: bool = False,
        delete_source: bool = False,
        message: str | None = None,
    ) -> MergeResult:
        """Merge bookmark ``source`` into ``target``; ``target`` moves to the merge change."""
        message_arg(message)
        return await merge(
            await self._store(repo),
            target=check_name(target),
            source=check_name(source),
            allow_conflicted=allow_conflicted,
            delete_source=delete_source,
            message=message,
            author="client",
        )

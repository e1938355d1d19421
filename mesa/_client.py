"""The `Mesa` client: credentials, the transport, repos and mounts.

``Mesa(org=..., api_key=...)`` falls back to ``MESA_API_KEY``, then to the local
default server's admin key. Every request signs a short-lived token from the API
key locally; nothing secret leaves the process but tokens.

Besides ``mesa.repos`` and ``mesa.fs``, the REST-like version-control API works
without a mount: ``mesa.changes`` (get, list, create), ``mesa.bookmarks`` (list, get,
create, move, delete, merge: `mesa._bookmarks.Bookmarks`) and ``mesa.diffs.get``.
Their errors are `ApiError` subclasses (`NotFoundError`, `ConflictError` ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from engine.ids import ROOT_CHANGE_ID
from mesa import _changes, _local
from mesa._args import message_arg
from mesa._bookmarks import Bookmarks, check_name
from mesa._changes import ChangeDiff, ChangeInfo
from mesa._context import Context
from mesa._gateway import Gateway
from mesa._history import resolve_source
from mesa._keys import ApiKeys, Tokens
from mesa._mounting import Mount
from mesa._records import (
    DEFAULT_RACE_WINDOW_MS,
    BookmarkRecord,
    ChangeRecord,
    RepoRecord,
    bookmark_key,
    change_key,
    repo_key,
)
from mesa._store import RepoStore, open_store
from mesa._types import DiskCacheConfig, RepoConfig
from mesa.errors import ConflictError, InvalidOptionsError, MissingCredentialError, NotFoundError
from transports.auth import Claims
from transports.base import (
    Clock,
    InvalidNameError,
    SystemClock,
    Transport,
    validate_org,
    validate_repo,
)

DEFAULT_SNAPSHOT_EVERY = 10_000
MAX_RACE_WINDOW_MS = 3_600_000


@dataclass(frozen=True)
class Repo:
    """A repository as `Mesa.repos` returns it."""

    name: str
    default_bookmark: str
    created_at_ms: int
    race_window_ms: int = DEFAULT_RACE_WINDOW_MS


class Mesa:
    """A client for one org (see module docstring).

    Args:
        org: the organization slug (falls back to ``MESA_ORG``).
        api_key: the org's API key (falls back to ``MESA_API_KEY``, then the local
            default server's admin key).
        transport: where logs, blobs and records live; the local default when None.
        clock: wall clock for token times (injected by tests).
        snapshot_every: store a snapshot of a change each time its log grows by this
            many entries (the mount whose entry crosses the mark writes it); None never.
    """

    def __init__(
        self,
        org: str | None = None,
        api_key: str | None = None,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
    ) -> None:
        org = org if org is not None else os.environ.get("MESA_ORG")
        if not org:
            raise InvalidOptionsError("Mesa needs an org (argument or MESA_ORG)")
        try:
            self.org = validate_org(org)
        except InvalidNameError as exc:
            raise InvalidOptionsError(str(exc)) from exc
        if snapshot_every is not None and (
            isinstance(snapshot_every, bool)
            or not isinstance(snapshot_every, int)
            or snapshot_every < 1
        ):
            raise InvalidOptionsError("snapshot_every must be a positive int or None")
        self.snapshot_every = snapshot_every
        self.clock: Clock = clock if clock is not None else SystemClock()
        key = api_key if api_key is not None else os.environ.get("MESA_API_KEY")
        if transport is None:
            transport, key = _local.default_transport(self.org, key)
        if not key:
            raise MissingCredentialError("no API key: pass api_key= or set MESA_API_KEY")
        #: Where logs, blobs and records live (the transport itself, unmapped).
        self.transport: Transport = transport
        self._ctx = Context(self.org, Gateway(transport), self.clock, key, snapshot_every)
        self.repos = Repos(self._ctx)
        self.fs = FsNamespace(self._ctx)
        self.changes = Changes(self._ctx)
        self.bookmarks = Bookmarks(self._ctx)
        self.diffs = Diffs(self._ctx)
        #: Create, list and revoke the org's API keys (needs an admin key).
        self.api_keys = ApiKeys(self._ctx)
        #: Sign short-lived tokens for sandboxes, locally.
        self.tokens = Tokens(self._ctx)

    def sign_token(self, repos: dict[str, str], ttl_s: int, mount_id: str) -> tuple[str, Claims]:
        """Sign a token granting ``repos`` for ``ttl_s`` seconds from now."""
        return self._ctx.sign_token(repos, ttl_s, mount_id)

    def management_token(self) -> str:
        """Return a short-lived token for repo and record management."""
        return self._ctx.management_token()


class Repos:
    """``mesa.repos``: create, get, list and delete repositories."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def create(
        self,
        name: str,
        *,
        default_bookmark: str = "main",
        race_window_ms: int = DEFAULT_RACE_WINDOW_MS,
    ) -> Repo:
        """Create a repo whose ``default_bookmark`` points at a new empty change.

        ``race_window_ms`` is how close in sequencer time two concurrent writes to one
        file must be to conflict (the spec's "same second"); it is fixed per repo so
        every replica folds alike.

        Raises:
            InvalidOptionsError: the name is invalid.
            ConflictError: a repo of that name exists.
        """
        ctx = self._ctx
        try:
            validate_repo(name)
        except InvalidNameError as exc:
            raise InvalidOptionsError(str(exc)) from exc
        try:
            check_name(default_bookmark)
        except InvalidOptionsError as exc:
            raise InvalidOptionsError(f"default_bookmark: {exc}") from None
        if (
            isinstance(race_window_ms, bool)
            or not isinstance(race_window_ms, int)
            or not 0 <= race_window_ms <= MAX_RACE_WINDOW_MS
        ):
            raise InvalidOptionsError(f"race_window_ms must be an int in 0..{MAX_RACE_WINDOW_MS}")
        token = ctx.management_token()
        now_ms = ctx.clock.now_ms()
        record = RepoRecord(name, default_bookmark, now_ms, race_window_ms)
        change = ChangeRecord(ctx.new_change_id(), created_at_ms=now_ms)
        t = ctx.gateway
        try:
            # Refuse before writing anything: a create of an existing repo must not
            # add a change or a bookmark to it. (The repo record, written last, is
            # still the compare-and-set that decides a race between two creates.)
            if await t.kv_get(token, repo_key(ctx.org, name)) is not None:
                raise ConflictError(f"repo {ctx.org}/{name} already exists")
            await t.kv_put(
                token,
                change_key(ctx.org, name, change.change_id),
                change.encode(),
                expected_revision=0,
            )
            bookmark = BookmarkRecord(default_bookmark, change.change_id)
            await t.kv_put(
                token,
                bookmark_key(ctx.org, name, default_bookmark),
                bookmark.encode(),
                expected_revision=0,
            )
            await t.kv_put(token, repo_key(ctx.org, name), record.encode(), expected_revision=0)
        except ConflictError as exc:
            raise ConflictError(f"repo {ctx.org}/{name} already exists") from exc
        return Repo(name, default_bookmark, now_ms, race_window_ms)

    async def get(self, name: str) -> Repo:
        """Return the repo ``name``, or raise `NotFoundError`."""
        ctx = self._ctx
        try:
            validate_repo(name)
        except InvalidNameError as exc:
            raise InvalidOptionsError(str(exc)) from exc
        entry = await ctx.gateway.kv_get(ctx.management_token(), repo_key(ctx.org, name))
        if entry is None:
            raise NotFoundError(f"repo {ctx.org}/{name} not found")
        record = RepoRecord.decode(entry.value)
        return Repo(
            record.name, record.default_bookmark, record.created_at_ms, record.race_window_ms
        )

    async def list(self) -> list[Repo]:
        """Return every repo of the org, sorted by name."""
        ctx = self._ctx
        keys = await ctx.gateway.kv_keys(ctx.management_token(), f"{ctx.org}.")
        names = sorted(
            key.split(".")[1] for key in keys if key.endswith(".repo") and key.count(".") == 2
        )
        return [await self.get(name) for name in names]

    async def delete(self, name: str) -> None:
        """Delete the repo ``name``: its records, logs and blobs, all at once (admin key).

        Its record bucket, log stream and blob store are deleted by the server side in
        one request, so nothing of the repo stays behind and a refused delete (not an
        admin) changes nothing. Close the mounts of the repo first: what they write
        after the delete belongs to no repo (docs/versioning.md).

        Raises:
            NotFoundError: no such repo.
            AuthorizationError: the key is not an admin key of the org.
        """
        ctx = self._ctx
        await self.get(name)
        await ctx.gateway.delete_repo_storage(ctx.management_token(), ctx.org, name)


class Changes:
    """``mesa.changes``: changes of a repo without a mount (REST-like errors)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def _store(self, repo: str) -> RepoStore:
        return await open_store(self._ctx, self._ctx.management_token(), repo)

    async def get(self, repo: str, change_id: str) -> ChangeInfo:
        """Return a change with its current commit oid and conflicted paths."""
        return await _changes.change_info(await self._store(repo), change_id)

    async def list(
        self,
        repo: str,
        *,
        bookmark: str | None = None,
        change_id: str | None = None,
        limit: int = 50,
    ) -> list[ChangeInfo]:
        """Return the changes reachable from ``bookmark`` or ``change_id``, newest first.

        With neither, from the repo's default bookmark. ``limit`` 0 lists them all.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionsError("limit must be an int >= 0")
        store = await self._store(repo)
        if bookmark is None and change_id is None:
            bookmark = store.repo.default_bookmark
        start = await resolve_source(store, bookmark, change_id)
        records = await _changes.reachable(store, start, limit)
        return [await _changes.change_info(store, r.change_id) for r in records]

    async def create(
        self,
        repo: str,
        *,
        base_change_id: str | None = None,
        bookmark: str | None = None,
        message: str | None = None,
    ) -> ChangeInfo:
        """Fork a new empty change off ``base_change_id`` or ``bookmark``'s change.

        With neither, off the repo's default bookmark. The base's current tree is
        sealed as the new change's base; no bookmark moves.
        """
        message_arg(message)
        store = await self._store(repo)
        if base_change_id is None and bookmark is None:
            bookmark = store.repo.default_bookmark
        source = await resolve_source(store, bookmark, base_change_id)
        folded = await _changes.current_state(store, source)
        record = await _changes.create_child(
            store, source, folded, message=message or "", author="client"
        )
        return _changes.info_of(record, await _changes.base_state(store, record))


class Diffs:
    """``mesa.diffs``: differences between changes."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def get(
        self,
        repo: str,
        *,
        head_change_id: str,
        base_change_id: str | None = None,
        patch: bool = True,
    ) -> ChangeDiff:
        """Return the diff from ``base_change_id``'s tree to ``head_change_id``'s.

        Both are current trees. Without ``base_change_id`` the base is the head's own
        base tree (its parent as sealed, or its merged parents), so the diff is what
        the head change itself did; ``base_change_id`` is then reported as its first
        parent.
        """
        store = await open_store(self._ctx, self._ctx.management_token(), repo)
        head = await _changes.current_state(store, head_change_id)
        if base_change_id is None:
            record = await _changes.require_change(store, head_change_id)
            base_tree = (await _changes.base_state(store, record)).tree
            base_id = record.parents[0] if record.parents else ROOT_CHANGE_ID
        else:
            base_tree = (await _changes.current_state(store, base_change_id)).state.tree
            base_id = base_change_id
        return await _changes.diff(
            store, base_id, base_tree, head_change_id, head.state.tree, patch=patch
        )


class FsNamespace:
    """``mesa.fs``: mounts."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def mount(
        self,
        repos: Sequence[str | RepoConfig],
        *,
        ttl: int | None = None,
        disk_cache: DiskCacheConfig | None = None,
        mode: str = "rw",
    ) -> Mount:
        """Return an async context manager yielding a `MesaFileSystem` over ``repos``.

        Raises:
            InvalidOptionsError: empty ``repos``, ``ttl`` outside 1..86400, a bad
                ``mode`` ("rw" or "ro"), or a repo of another org.
        """
        return Mount(self._ctx, repos, ttl=ttl, disk_cache=disk_cache, mode=mode)

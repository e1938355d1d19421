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

import contextlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from engine.ids import ROOT_CHANGE_ID, change_id_from_bytes
from mesa import _changes, _local
from mesa._bookmarks import Bookmarks, require_record
from mesa._changes import ChangeDiff, ChangeInfo
from mesa._history import resolve_source
from mesa._mount import Mount
from mesa._records import (
    DEFAULT_RACE_WINDOW_MS,
    BookmarkRecord,
    ChangeRecord,
    RepoRecord,
    bookmark_key,
    change_key,
    repo_key,
    repo_prefix,
)
from mesa._translate import api_error
from mesa._types import DiskCacheConfig, RepoConfig
from mesa.errors import ConflictError, InvalidOptionsError, MissingCredentialError, NotFoundError
from transports.auth import ALL_REPOS, READ_WRITE, Claims, sign
from transports.base import (
    Clock,
    InvalidNameError,
    MissingError,
    RevisionMismatchError,
    SystemClock,
    Transport,
    TransportError,
    validate_org,
    validate_repo,
)

MANAGEMENT_TOKEN_TTL_S = 300
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
        self._api_key = key
        self.transport: Transport = transport
        self.repos = Repos(self)
        self.fs = FsNamespace(self)
        self.changes = Changes(self)
        self.bookmarks = Bookmarks(self)
        self.diffs = Diffs(self)

    def sign_token(self, repos: dict[str, str], ttl_s: int, mount_id: str) -> tuple[str, Claims]:
        """Sign a token granting ``repos`` for ``ttl_s`` seconds from now."""
        iat = self.clock.now_ms() // 1000
        claims = Claims(org=self.org, repos=repos, iat=iat, exp=iat + ttl_s, mount_id=mount_id)
        return sign(self._api_key, claims), claims

    def management_token(self) -> str:
        """Return a short-lived token for repo and record management."""
        return self.sign_token({ALL_REPOS: READ_WRITE}, MANAGEMENT_TOKEN_TTL_S, "client")[0]

    def new_change_id(self) -> str:
        """Return a fresh random change id."""
        return change_id_from_bytes(secrets.token_bytes(16))


class Repos:
    """``mesa.repos``: create, get, list and delete repositories."""

    def __init__(self, client: Mesa) -> None:
        self._client = client

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
        client = self._client
        try:
            validate_repo(name)
        except InvalidNameError as exc:
            raise InvalidOptionsError(str(exc)) from exc
        if not isinstance(default_bookmark, str) or not default_bookmark:
            raise InvalidOptionsError("default_bookmark must be a non-empty string")
        if (
            isinstance(race_window_ms, bool)
            or not isinstance(race_window_ms, int)
            or not 0 <= race_window_ms <= MAX_RACE_WINDOW_MS
        ):
            raise InvalidOptionsError(f"race_window_ms must be an int in 0..{MAX_RACE_WINDOW_MS}")
        token = client.management_token()
        now_ms = client.clock.now_ms()
        record = RepoRecord(name, default_bookmark, now_ms, race_window_ms)
        change = ChangeRecord(client.new_change_id(), created_at_ms=now_ms)
        t = client.transport
        try:
            # Refuse before writing anything: a create of an existing repo must not
            # add a change or a bookmark to it. (The repo record, written last, is
            # still the compare-and-set that decides a race between two creates.)
            if await t.kv_get(token, repo_key(client.org, name)) is not None:
                raise ConflictError(f"repo {client.org}/{name} already exists")
            await t.kv_put(
                token,
                change_key(client.org, name, change.change_id),
                change.encode(),
                expected_revision=0,
            )
            bookmark = BookmarkRecord(default_bookmark, change.change_id)
            await t.kv_put(
                token,
                bookmark_key(client.org, name, default_bookmark),
                bookmark.encode(),
                expected_revision=0,
            )
            await t.kv_put(token, repo_key(client.org, name), record.encode(), expected_revision=0)
        except RevisionMismatchError as exc:
            raise ConflictError(f"repo {client.org}/{name} already exists") from exc
        except TransportError as exc:
            raise api_error(exc) from exc
        return Repo(name, default_bookmark, now_ms, race_window_ms)

    async def get(self, name: str) -> Repo:
        """Return the repo ``name``, or raise `NotFoundError`."""
        client = self._client
        try:
            validate_repo(name)
            entry = await client.transport.kv_get(
                client.management_token(), repo_key(client.org, name)
            )
        except InvalidNameError as exc:
            raise InvalidOptionsError(str(exc)) from exc
        except TransportError as exc:
            raise api_error(exc) from exc
        if entry is None:
            raise NotFoundError(f"repo {client.org}/{name} not found")
        record = RepoRecord.decode(entry.value)
        return Repo(
            record.name, record.default_bookmark, record.created_at_ms, record.race_window_ms
        )

    async def list(self) -> list[Repo]:
        """Return every repo of the org, sorted by name."""
        client = self._client
        try:
            keys = await client.transport.kv_keys(client.management_token(), f"{client.org}.")
        except TransportError as exc:
            raise api_error(exc) from exc
        names = sorted(
            key.split(".")[1] for key in keys if key.endswith(".repo") and key.count(".") == 2
        )
        return [await self.get(name) for name in names]

    async def delete(self, name: str) -> None:
        """Delete the repo ``name``: its record, bookmarks, changes and snapshot records.

        The repo record goes last, so an interrupted delete can be run again. The log
        stream and the blobs stay in the transport, unreachable (docs/versioning.md).

        Raises:
            NotFoundError: no such repo.
        """
        client = self._client
        await self.get(name)
        token = client.management_token()
        t = client.transport
        key = repo_key(client.org, name)
        try:
            for other in await t.kv_keys(token, repo_prefix(client.org, name)):
                if other != key:
                    with contextlib.suppress(MissingError):
                        await t.kv_delete(token, other)
            await t.kv_delete(token, key)
        except MissingError as exc:
            raise NotFoundError(f"repo {client.org}/{name} not found") from exc
        except TransportError as exc:
            raise api_error(exc) from exc


class Changes:
    """``mesa.changes``: changes of a repo without a mount (REST-like errors)."""

    def __init__(self, client: Mesa) -> None:
        self._client = client

    async def _scope(self, repo: str) -> _changes.Scope:
        return await _changes.open_scope(self._client, self._client.management_token(), repo)

    async def get(self, repo: str, change_id: str) -> ChangeInfo:
        """Return a change with its current commit oid and conflicted paths."""
        return await _changes.change_info(await self._scope(repo), change_id)

    async def list(
        self, repo: str, *, bookmark: str | None = None, limit: int = 50
    ) -> list[ChangeInfo]:
        """Return the changes reachable from ``bookmark`` (default: the repo's), newest first.

        ``limit`` 0 lists them all.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionsError("limit must be an int >= 0")
        scope = await self._scope(repo)
        start = (await require_record(scope, bookmark or scope.repo.default_bookmark))[0]
        records = await _changes.reachable(scope, start.change_id, limit)
        return [await _changes.change_info(scope, r.change_id) for r in records]

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
        scope = await self._scope(repo)
        if base_change_id is None and bookmark is None:
            bookmark = scope.repo.default_bookmark
        source = await resolve_source(scope, bookmark, base_change_id)
        folded = await _changes.current_state(scope, source)
        record = await _changes.create_child(
            scope, source, folded, message=message or "", author="client"
        )
        return _changes.info_of(record, await _changes.base_state(scope, record))


class Diffs:
    """``mesa.diffs``: differences between changes."""

    def __init__(self, client: Mesa) -> None:
        self._client = client

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
        scope = await _changes.open_scope(self._client, self._client.management_token(), repo)
        head = await _changes.current_state(scope, head_change_id)
        if base_change_id is None:
            record = await _changes.require_change(scope, head_change_id)
            base_tree = (await _changes.base_state(scope, record)).tree
            base_id = record.parents[0] if record.parents else ROOT_CHANGE_ID
        else:
            base_tree = (await _changes.current_state(scope, base_change_id)).state.tree
            base_id = base_change_id
        return await _changes.diff(
            scope, base_id, base_tree, head_change_id, head.state.tree, patch=patch
        )


class FsNamespace:
    """``mesa.fs``: mounts."""

    def __init__(self, client: Mesa) -> None:
        self._client = client

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
        return Mount(self._client, repos, ttl=ttl, disk_cache=disk_cache, mode=mode)

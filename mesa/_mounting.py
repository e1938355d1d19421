"""``mesa.fs.mount(...)``: the async context manager that builds a mount.

`Mount` checks the options, signs the mount's one token, resolves each repo to the
change it works on (a named change, a bookmark it then follows, or the repo's default
bookmark), starts one `RepoMount` per repo and hands back the `MesaFileSystem` over
them. Leaving it waits for in-flight writes and queued events, then closes.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from types import TracebackType

from mesa._context import Context
from mesa._fs import MesaFileSystem
from mesa._mount import RepoMount
from mesa._records import (
    BookmarkRecord,
    ChangeRecord,
    RepoRecord,
    bookmark_key,
    change_key,
    repo_key,
)
from mesa._types import DiskCacheConfig, RepoConfig
from mesa.errors import AuthorizationError, InvalidOptionsError, NotFoundError
from transports.auth import READ_ONLY, READ_WRITE

#: A mount's token lifetime when none is given, and the longest allowed (seconds).
DEFAULT_TTL_S = 3600
MAX_TTL_S = 86_400


class Mount:
    """The async context manager ``mesa.fs.mount(...)`` returns."""

    def __init__(
        self,
        ctx: Context,
        repos: Sequence[str | RepoConfig],
        *,
        ttl: int | None,
        disk_cache: DiskCacheConfig | None,
        mode: str,
    ) -> None:
        self._ctx = ctx
        self._configs = _parse_repos(ctx.org, repos)
        if mode not in (READ_WRITE, READ_ONLY):
            raise InvalidOptionsError(f"mode must be 'rw' or 'ro', not {mode!r}")
        if mode == READ_ONLY:
            self._configs = [
                RepoConfig(c.name, c.bookmark, c.change_id, read_only=True) for c in self._configs
            ]
        ttl = DEFAULT_TTL_S if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_S:
            raise InvalidOptionsError(f"ttl must be an int in 1..{MAX_TTL_S}, not {ttl!r}")
        if disk_cache is not None and not isinstance(disk_cache, DiskCacheConfig):
            raise InvalidOptionsError("disk_cache must be a DiskCacheConfig")
        self._ttl = ttl
        self._disk_cache = disk_cache
        self._fs: MesaFileSystem | None = None

    async def __aenter__(self) -> MesaFileSystem:
        ctx = self._ctx
        mount_id = "m" + secrets.token_hex(8)
        if ctx.holds_token:
            self._configs = _within_token(ctx, self._configs)
        grants = {c.name: READ_ONLY if c.read_only else READ_WRITE for c in self._configs}
        token, claims = ctx.sign_token(grants, self._ttl, mount_id)
        fs = MesaFileSystem(ctx.org, mount_id)
        try:
            for config in self._configs:
                change_id, record, bookmark = await _resolve_change(ctx, token, config)
                repo = RepoMount(
                    ctx,
                    config.name,
                    change_id,
                    token=token,
                    claims=claims,
                    read_only=config.read_only,
                    repo=record,
                    mount_id=mount_id,
                    disk_cache=self._disk_cache,
                    listener=fs.on_folded,
                    bookmark=bookmark,
                )
                fs.add_repo(repo)
                await repo.start()
        except BaseException:
            await fs.aclose()
            raise
        self._fs = fs
        return fs

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fs is not None:
            await self._fs.aclose()
            self._fs = None


def _within_token(ctx: Context, configs: list[RepoConfig]) -> list[RepoConfig]:
    """Check a given token grants every repo; a repo it grants read-only mounts read-only.

    Raises:
        AuthorizationError: the token is for another org or does not grant a repo.
    """
    claims = ctx.given_claims()
    if claims.org != ctx.org:
        raise AuthorizationError(f"the token is for org {claims.org!r}, not {ctx.org!r}")
    checked: list[RepoConfig] = []
    for c in configs:
        access = claims.access(c.name)
        if access is None:
            raise AuthorizationError(f"the token does not grant repo {ctx.org}/{c.name}")
        read_only = c.read_only or access == READ_ONLY
        checked.append(RepoConfig(c.name, c.bookmark, c.change_id, read_only=read_only))
    return checked


def _parse_repos(org: str, repos: Sequence[str | RepoConfig]) -> list[RepoConfig]:
    if isinstance(repos, str | bytes) or not isinstance(repos, Sequence) or not repos:
        raise InvalidOptionsError("repos must be a non-empty sequence of names or RepoConfig")
    configs: list[RepoConfig] = []
    for item in repos:
        if isinstance(item, str):
            name = item
            if "/" in item:
                prefix, _, name = item.partition("/")
                if prefix != org:
                    raise InvalidOptionsError(
                        f"repo {item!r} belongs to org {prefix!r}; cross-org mounts are rejected"
                    )
            config = RepoConfig(name)
        elif isinstance(item, RepoConfig):
            config = item
        else:
            raise InvalidOptionsError(f"a repo is a name or a RepoConfig, not {item!r}")
        if "/" in config.name:
            raise InvalidOptionsError(f"invalid repo name {config.name!r}")
        if any(c.name == config.name for c in configs):
            raise InvalidOptionsError(f"repo {config.name!r} is listed twice")
        configs.append(config)
    return configs


async def _resolve_change(
    ctx: Context, token: str, config: RepoConfig
) -> tuple[str, RepoRecord, str | None]:
    """Return the change a repo config names, the repo, and the bookmark to follow.

    A mount of a bookmark follows it: a named one (``RepoConfig(bookmark=...)``) or,
    when neither a bookmark nor a change id is named (a plain ``"app"``), the repo's
    default bookmark, exactly as if it were named. A pinned change id follows nothing.
    """
    t = ctx.gateway
    org, name = ctx.org, config.name
    repo_entry = await t.kv_get(token, repo_key(org, name))
    if repo_entry is None:
        raise NotFoundError(f"repo {org}/{name} not found")
    repo = RepoRecord.decode(repo_entry.value)
    if config.change_id is not None:
        change = await t.kv_get(token, change_key(org, name, config.change_id))
        if change is None:
            raise NotFoundError(f"change {config.change_id} not found in {org}/{name}")
        return ChangeRecord.decode(change.value).change_id, repo, None
    bookmark = config.bookmark or repo.default_bookmark
    entry = await t.kv_get(token, bookmark_key(org, name, bookmark))
    if entry is None:
        raise NotFoundError(f"bookmark {bookmark!r} not found in {org}/{name}")
    return BookmarkRecord.decode(entry.value).change_id, repo, bookmark

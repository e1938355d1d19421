"""The SDK against spec/python-mount.md, spec/realtime.md and design.md §4, §5, §7.

Everything runs on the memory transport with one injected `ManualClock` (see
conftest.py): mounts on the same change are "hosts" sharing a log, time only moves
when a test moves it, and every assertion is on values, errnos or exception types.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import jwt
import pytest

from mesa._records import BookmarkRecord, bookmark_key
from mesa_sdk import (
    ApiError,
    AuthenticationError,
    ConflictError,
    DiskCacheConfig,
    InvalidOptionsError,
    Mesa,
    MesaFileSystem,
    MissingCredentialError,
    NotFoundError,
    RepoConfig,
    WatchEvent,
)
from tests.mesa.conftest import KEY, ORG
from transports.auth import Keyring
from transports.base import LogId, ManualClock, TokenRejectedError
from transports.keys import generate_key, key_id, private_key
from transports.memory import MemoryTransport

P = "/acme/app"


# -- helpers -----------------------------------------------------------------------------


async def main_change(mesa: Mesa, repo: str = "app") -> str:
    """Return the change id the repo's ``main`` bookmark points at."""
    entry = await mesa.transport.kv_get(mesa.management_token(), bookmark_key(ORG, repo, "main"))
    assert entry is not None
    return BookmarkRecord.decode(entry.value).change_id


async def logged(mesa: Mesa, transport: MemoryTransport, repo: str = "app") -> int:
    """Return how many entries the log of the repo's ``main`` change holds."""
    return len(transport.log_entries(ORG, repo, await main_change(mesa, repo)))


def cached_files(root: Path) -> list[bytes]:
    """Return the contents of the finished files under a disk cache directory."""
    return [p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


class Recorder:
    """A subscription handler that records events and lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self._new = asyncio.Event()

    def __call__(self, event: WatchEvent) -> None:
        self.events.append(event)
        self._new.set()

    async def wait_for(self, predicate: Callable[[list[WatchEvent]], bool]) -> None:
        """Wait (at most 2 s) until ``predicate(events)`` holds."""
        async with asyncio.timeout(2):
            while not predicate(self.events):
                self._new.clear()
                await self._new.wait()

    async def wait_event(self, event: WatchEvent) -> None:
        """Wait until ``event`` was recorded."""
        await self.wait_for(lambda events: event in events)


def conflict_block(side1: bytes, base: bytes, side2: bytes) -> bytes:
    """Return jj's snapshot-style materialization of a two-sided conflict."""
    return (
        b"<<<<<<< conflict 1 of 1\n+++++++ side #1\n"
        + side1
        + b"------- base\n"
        + base
        + b"+++++++ side #2\n"
        + side2
        + b">>>>>>> conflict 1 of 1 ends\n"
    )


async def expect_invalid(mesa: Mesa, **options: Any) -> None:
    """Assert that mounting with ``options`` raises InvalidOptionsError (also a ValueError)."""
    with pytest.raises(InvalidOptionsError) as info:
        async with mesa.fs.mount(**options):
            pass
    assert isinstance(info.value, ValueError)


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"repos": []}, id="empty-repos"),
        pytest.param({"repos": ["app"], "ttl": 0}, id="ttl-0"),
        pytest.param({"repos": ["app"], "ttl": 86401}, id="ttl-86401"),
        pytest.param({"repos": ["app"], "ttl": -5}, id="ttl-negative"),
        pytest.param({"repos": ["app"], "ttl": "10"}, id="ttl-str"),
        pytest.param({"repos": ["app"], "ttl": 1.5}, id="ttl-float"),
        pytest.param({"repos": ["app"], "ttl": True}, id="ttl-bool"),
        pytest.param({"repos": ["app"], "mode": "rw+"}, id="mode-rw+"),
        pytest.param({"repos": ["app"], "mode": "w"}, id="mode-w"),
        pytest.param({"repos": ["other/app"]}, id="cross-org"),
        pytest.param({"repos": ["app", "app"]}, id="listed-twice"),
        pytest.param({"repos": "app"}, id="repos-str"),
        pytest.param({"repos": [42]}, id="repos-int"),
        pytest.param({"repos": ["app"], "disk_cache": "/tmp/cache"}, id="disk-cache-str"),
    ],
)
async def test_invalid_mount_options(mesa: Mesa, options: dict[str, Any]) -> None:
    await expect_invalid(mesa, **options)


def test_invalid_options_are_value_errors() -> None:
    assert issubclass(InvalidOptionsError, ValueError)
    with pytest.raises(InvalidOptionsError):
        RepoConfig("app", bookmark="main", change_id="z" * 32)
    with pytest.raises(ValueError, match="bookmark or a change_id"):
        RepoConfig("app", bookmark="main", change_id="z" * 32)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: RepoConfig(""), id="empty-name"),
        pytest.param(lambda: RepoConfig("app", bookmark=""), id="empty-bookmark"),
        pytest.param(lambda: RepoConfig("app", change_id="bad"), id="short-change-id"),
        pytest.param(lambda: RepoConfig("app", change_id="a" * 32), id="change-id-not-k-z"),
        pytest.param(lambda: RepoConfig("app", change_id=""), id="empty-change-id"),
        pytest.param(lambda: RepoConfig("app", read_only=cast("Any", 1)), id="read-only-int"),
        pytest.param(lambda: DiskCacheConfig(path=""), id="cache-empty-path"),
        pytest.param(lambda: DiskCacheConfig(path="/tmp/x", max_size_bytes=0), id="cache-0"),
    ],
)
def test_invalid_configs(make: Callable[[], object]) -> None:
    with pytest.raises(InvalidOptionsError):
        make()


async def test_rejected_options_sign_nothing(mesa: Mesa, transport: MemoryTransport) -> None:
    before = await logged(mesa, transport)
    await expect_invalid(mesa, repos=["app"], ttl=0)
    assert await logged(mesa, transport) == before


@pytest.mark.parametrize("mode", [0o10000, -1, 1.5, True, "755"])
async def test_chmod_rejects_invalid_modes(
    mesa: Mesa, transport: MemoryTransport, mode: Any
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        before = await logged(mesa, transport)
        with pytest.raises(InvalidOptionsError):
            await fs.chmod(f"{P}/f", mode)
        assert await logged(mesa, transport) == before
        await fs.chmod(f"{P}/f", 0o7777)
        assert (await fs.stat(f"{P}/f")).mode & 0o7777 == 0o7777


@pytest.mark.parametrize(
    ("atime", "mtime"), [("1000", 1000), (1000, None), (float("nan"), 1000), (True, 1000)]
)
async def test_utimes_rejects_non_numbers(mesa: Mesa, atime: Any, mtime: Any) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        with pytest.raises(InvalidOptionsError):
            await fs.utimes(f"{P}/f", atime, mtime)


async def test_utimes_takes_milliseconds(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.utimes(f"{P}/f", 1_600_000_000_000, 1_600_000_123_456.0)
        assert (await fs.stat(f"{P}/f")).mtime_ms == 1_600_000_123_456.0


@pytest.mark.parametrize("ttl", [1, 86400, None])
async def test_valid_ttls(mesa: Mesa, ttl: int | None) -> None:
    async with mesa.fs.mount(repos=["app"], ttl=ttl) as fs:
        await fs.write(f"{P}/f", b"ok")
        assert await fs.read(f"{P}/f") == b"ok"


async def test_valid_repo_forms_share_the_main_change(mesa: Mesa) -> None:
    change = await main_change(mesa)
    forms: list[str | RepoConfig] = [
        "acme/app",
        RepoConfig("app", bookmark="main"),
        RepoConfig("app", change_id=change),
        RepoConfig(name="app", bookmark="main", read_only=False),
    ]
    async with mesa.fs.mount(repos=["app"]) as writer:
        await writer.write(f"{P}/f", b"shared")
        for form in forms:
            async with mesa.fs.mount(repos=[form]) as fs:
                assert await fs.readdir("/acme") == ["app"]
                assert await fs.read(f"{P}/f") == b"shared"
                await fs.write(f"{P}/f", b"shared")


@pytest.mark.parametrize("mode", ["rw", "ro"])
async def test_valid_modes(mesa: Mesa, mode: str) -> None:
    async with mesa.fs.mount(repos=["app"], mode=mode) as fs:
        assert await fs.readdir(P) == []


# -- client, repos, credentials ----------------------------------------------------------


async def test_api_key_falls_back_to_env(
    transport: MemoryTransport, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESA_API_KEY", KEY)
    mesa = Mesa(org="acme", transport=transport, clock=clock)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"env")
        assert await fs.read(f"{P}/f") == b"env"


async def test_org_falls_back_to_env(
    transport: MemoryTransport, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidOptionsError):
        Mesa(api_key=KEY, transport=transport, clock=clock)
    monkeypatch.setenv("MESA_ORG", "acme")
    mesa = Mesa(api_key=KEY, transport=transport, clock=clock)
    assert mesa.org == "acme"
    await mesa.repos.create("app")
    assert [r.name for r in await mesa.repos.list()] == ["app"]


async def test_missing_api_key(transport: MemoryTransport, clock: ManualClock) -> None:
    with pytest.raises(MissingCredentialError):
        Mesa(org="acme", transport=transport, clock=clock)


async def test_env_key_can_be_wrong(
    transport: MemoryTransport, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESA_API_KEY", generate_key())
    mesa = Mesa(org="acme", transport=transport, clock=clock)
    with pytest.raises(AuthenticationError):
        await mesa.repos.create("app")


async def test_invalid_org(transport: MemoryTransport, clock: ManualClock) -> None:
    with pytest.raises(InvalidOptionsError):
        Mesa(org="Not An Org", api_key=KEY, transport=transport, clock=clock)


async def test_missing_repo_bookmark_or_change(mesa: Mesa) -> None:
    for repos in (
        ["nope"],
        [RepoConfig("app", bookmark="nope")],
        [RepoConfig("app", change_id="k" * 32)],
        ["app", "nope"],
    ):
        with pytest.raises(NotFoundError) as info:
            async with mesa.fs.mount(repos=repos):
                pass
        assert info.value.status_code == 404
        assert isinstance(info.value, ApiError)


async def test_repos_create_get_list(mesa: Mesa, clock: ManualClock) -> None:
    app = await mesa.repos.get("app")
    assert (app.name, app.default_bookmark) == ("app", "main")
    assert app.created_at_ms == clock.now_ms()
    clock.advance(5)
    docs = await mesa.repos.create("docs", default_bookmark="trunk")
    assert (docs.name, docs.default_bookmark, docs.created_at_ms) == (
        "docs",
        "trunk",
        clock.now_ms(),
    )
    assert await mesa.repos.get("docs") == docs
    assert [r.name for r in await mesa.repos.list()] == ["app", "docs"]
    with pytest.raises(NotFoundError):
        await mesa.repos.get("nope")
    with pytest.raises(InvalidOptionsError):
        await mesa.repos.create("bad/name")
    # A repo mounts on its own default bookmark.
    async with mesa.fs.mount(repos=["docs"]) as fs:
        await fs.write("/acme/docs/x", b"1")


async def test_repos_create_twice_conflicts_and_keeps_the_repo(
    mesa: Mesa, transport: MemoryTransport
) -> None:
    change = await main_change(mesa)
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"kept")
    keys = await transport.kv_keys(mesa.management_token(), "acme.app.")
    with pytest.raises(ConflictError) as info:
        await mesa.repos.create("app")
    assert info.value.status_code == 409
    with pytest.raises(ConflictError):
        await mesa.repos.create("app", default_bookmark="trunk")
    # A refused create adds no change and no bookmark to the existing repo.
    assert await transport.kv_keys(mesa.management_token(), "acme.app.") == keys
    with pytest.raises(NotFoundError):
        async with mesa.fs.mount(repos=[RepoConfig("app", bookmark="trunk")]):
            pass
    assert await main_change(mesa) == change
    assert [r.name for r in await mesa.repos.list()] == ["app"]
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert await fs.read(f"{P}/f") == b"kept"


# -- tokens ------------------------------------------------------------------------------


class RecordingTransport(MemoryTransport):
    """A memory transport that remembers the tokens its subscribers used."""

    def __init__(self, keyring: Keyring, clock: ManualClock) -> None:
        super().__init__(keyring, clock)
        self.subscribe_tokens: list[str] = []

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> Any:
        self.subscribe_tokens.append(token)
        return await super().subscribe(token, log, after_seq=after_seq)


#: The public halves of `KEY` and of a key nobody registered: what verifies a token.
PUBLIC = private_key(KEY).public_key()
OTHER = private_key(generate_key()).public_key()


async def test_mount_token_is_an_eddsa_jwt(keyring: Keyring, clock: ManualClock) -> None:
    transport = RecordingTransport(keyring, clock)
    mesa = Mesa(org="acme", api_key=KEY, transport=transport, clock=clock)
    await mesa.repos.create("app")
    await mesa.repos.create("docs")
    async with mesa.fs.mount(repos=["app", RepoConfig("docs", read_only=True)], ttl=60) as fs:
        assert len(set(transport.subscribe_tokens)) == 1  # one token for the whole mount
        token = transport.subscribe_tokens[0]
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        assert jwt.get_unverified_header(token)["kid"] == key_id(KEY)
        claims = jwt.decode(token, PUBLIC, algorithms=["EdDSA"], options={"verify_exp": False})
        assert claims["org"] == "acme"
        assert claims["repos"] == {"app": "rw", "docs": "ro"}
        assert claims["exp"] - claims["iat"] == 60
        assert claims["iat"] == clock.now_ms() // 1000
        assert claims["mid"] == fs.mount_id
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, OTHER, algorithms=["EdDSA"], options={"verify_exp": False})
    await transport.aclose()


async def test_each_mount_gets_its_own_token(keyring: Keyring, clock: ManualClock) -> None:
    transport = RecordingTransport(keyring, clock)
    mesa = Mesa(org="acme", api_key=KEY, transport=transport, clock=clock)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        assert a.mount_id != b.mount_id
        # Each mount subscribes (its log, and the default bookmark it follows) with its token.
        ta, tb = dict.fromkeys(transport.subscribe_tokens)
        claims_a = jwt.decode(ta, PUBLIC, algorithms=["EdDSA"], options={"verify_exp": False})
        claims_b = jwt.decode(tb, PUBLIC, algorithms=["EdDSA"], options={"verify_exp": False})
        assert (claims_a["mid"], claims_b["mid"]) == (a.mount_id, b.mount_id)
        assert claims_a["exp"] - claims_a["iat"] == 3600  # the default ttl
    await transport.aclose()


async def test_expired_token_fails_every_call_and_writes_nothing(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    async with mesa.fs.mount(repos=["app"], ttl=60) as fs:
        await fs.mkdir(f"{P}/d")
        await fs.write(f"{P}/f", b"before")
        clock.advance(59_000)
        assert await fs.read(f"{P}/f") == b"before"  # still valid: no refresh needed yet
        before = await logged(mesa, transport)
        clock.advance(2_000)  # 61 s after signing
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: fs.read(f"{P}/f"),
            lambda: fs.write(f"{P}/f", b"after"),
            lambda: fs.write(f"{P}/new", b"after"),
            lambda: fs.append(f"{P}/f", b"after"),
            lambda: fs.stat(f"{P}/f"),
            lambda: fs.lstat(f"{P}/f"),
            lambda: fs.readdir(P),
            lambda: fs.readdir("/"),
            lambda: fs.exists(f"{P}/f"),
            lambda: fs.exists(f"{P}/missing"),
            lambda: fs.mkdir(f"{P}/e"),
            lambda: fs.rm(f"{P}/f"),
            lambda: fs.mv(f"{P}/f", f"{P}/g"),
            lambda: fs.cp(f"{P}/f", f"{P}/g"),
            lambda: fs.chmod(f"{P}/f", 0o600),
            lambda: fs.symlink("f", f"{P}/l"),
            lambda: fs.utimes(f"{P}/f", 1, 1),
            lambda: fs.realpath(f"{P}/f"),
            fs.wait_synced,
        ]
        for call in calls:
            with pytest.raises(AuthenticationError):
                await call()
        with pytest.raises(AuthenticationError):
            fs.subscribe(lambda event: None)
        assert await logged(mesa, transport) == before
    # Leaving the context after expiry is quiet; a new mount signs a new token.
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert await fs.read(f"{P}/f") == b"before"
        assert not await fs.exists(f"{P}/new")


async def test_expired_token_is_refused_by_the_transport_too(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    """A client that bypasses the SDK's own expiry check still cannot write."""
    token, _ = mesa.sign_token({"app": "rw"}, 60, "rogue")
    change = await main_change(mesa)
    clock.advance(60_000)
    with pytest.raises(TokenRejectedError, match="expired"):
        await transport.append(token, LogId(ORG, "app", change), b"x", msg_id="rogue-1")
    assert await logged(mesa, transport) == 0


async def test_wrong_key_is_refused_at_mount(mesa: Mesa, transport: MemoryTransport) -> None:
    wrong = Mesa(org="acme", api_key=generate_key(), transport=transport, clock=mesa.clock)
    with pytest.raises(AuthenticationError) as info:
        async with wrong.fs.mount(repos=["app"]):
            pass
    assert info.value.status_code == 401


async def test_token_for_another_org_is_refused(
    mesa: Mesa, transport: MemoryTransport, keyring: Keyring
) -> None:
    # KEY is bound to acme: a token it signs for another org is refused.
    other = Mesa(org="other", api_key=KEY, transport=transport, clock=mesa.clock)
    with pytest.raises(AuthenticationError):
        async with other.fs.mount(repos=["app"]):
            pass
    with pytest.raises(AuthenticationError):
        await other.repos.create("app")
    # A key of the other org cannot reach acme's repo either: its mount sees only its org.
    other_key = generate_key()
    keyring.add(other_key, "other")
    other = Mesa(org="other", api_key=other_key, transport=transport, clock=mesa.clock)
    with pytest.raises(NotFoundError):
        async with other.fs.mount(repos=["app"]):
            pass
    await expect_invalid(other, repos=["acme/app"])


# -- read-only ---------------------------------------------------------------------------


async def seed(mesa: Mesa, repo: str = "app") -> None:
    """Write a small tree into ``repo``: d/f, d/sub/, a file and a symlink."""
    root = f"/acme/{repo}"
    async with mesa.fs.mount(repos=[repo]) as fs:
        await fs.mkdir(f"{root}/d/sub", recursive=True)
        await fs.write(f"{root}/d/f", b"data\n")
        await fs.write(f"{root}/big", os.urandom(100_000))
        await fs.symlink("d/f", f"{root}/link")


def mutations(fs: MesaFileSystem, root: str) -> list[Callable[[], Awaitable[None]]]:
    """Return one call of every mutation on existing (or fresh) paths under ``root``."""
    return [
        lambda: fs.write(f"{root}/d/f", b"new"),
        lambda: fs.write(f"{root}/d/new", b"new"),
        lambda: fs.write(f"{root}/d/huge", os.urandom(100_000)),
        lambda: fs.append(f"{root}/d/f", b"more"),
        lambda: fs.mkdir(f"{root}/e"),
        lambda: fs.mkdir(f"{root}/e/g", recursive=True),
        lambda: fs.rm(f"{root}/d/f"),
        lambda: fs.rm(f"{root}/d", recursive=True),
        lambda: fs.mv(f"{root}/d/f", f"{root}/d/g"),
        lambda: fs.cp(f"{root}/d/f", f"{root}/d/g"),
        lambda: fs.cp(f"{root}/d", f"{root}/d2", recursive=True),
        lambda: fs.chmod(f"{root}/d/f", 0o600),
        lambda: fs.symlink("f", f"{root}/d/l"),
        lambda: fs.utimes(f"{root}/d/f", 1, 2),
    ]


async def assert_read_only(fs: MesaFileSystem, root: str) -> None:
    for call in mutations(fs, root):
        with pytest.raises(OSError) as info:  # noqa: PT011 (the errno is what matters)
            await call()
        assert info.value.errno == errno.EROFS


async def test_read_only_repo_rejects_writes(mesa: Mesa, transport: MemoryTransport) -> None:
    await seed(mesa)
    before = await logged(mesa, transport)
    async with mesa.fs.mount(repos=[RepoConfig("app", read_only=True)]) as fs:
        await assert_read_only(fs, P)
        assert await fs.read(f"{P}/d/f") == b"data\n"
        assert await fs.read(f"{P}/link") == b"data\n"
        assert len(await fs.read(f"{P}/big")) == 100_000
        assert sorted(await fs.readdir(f"{P}/d")) == ["f", "sub"]
        assert (await fs.stat(f"{P}/d/f")).size == 5
        assert await fs.exists(f"{P}/d/sub")
    assert await logged(mesa, transport) == before


async def test_read_only_mount_follows_other_writers(mesa: Mesa) -> None:
    async with (
        mesa.fs.mount(repos=[RepoConfig("app", read_only=True)]) as reader,
        mesa.fs.mount(repos=["app"]) as writer,
    ):
        seen = Recorder()
        reader.subscribe(seen)
        await writer.write(f"{P}/f", b"live")
        await reader.wait_synced()
        assert await reader.read(f"{P}/f") == b"live"
        await seen.wait_event(WatchEvent(f"{P}/f", recursive=False))


async def test_mount_mixing_rw_and_ro_repos(mesa: Mesa, transport: MemoryTransport) -> None:
    await mesa.repos.create("docs")
    await seed(mesa, "docs")
    docs_before = await logged(mesa, transport, "docs")
    async with mesa.fs.mount(repos=["app", RepoConfig("docs", read_only=True)]) as fs:
        assert await fs.readdir("/acme") == ["app", "docs"]
        await assert_read_only(fs, "/acme/docs")
        await fs.write(f"{P}/f", b"rw")
        assert await fs.read(f"{P}/f") == b"rw"
        # Copying out of the read-only repo works; copying into it does not.
        await fs.cp("/acme/docs/d/f", f"{P}/copied")
        assert await fs.read(f"{P}/copied") == b"data\n"
        with pytest.raises(OSError) as info:  # noqa: PT011
            await fs.cp(f"{P}/f", "/acme/docs/d/copied")
        assert info.value.errno == errno.EROFS
    assert await logged(mesa, transport, "docs") == docs_before
    assert await logged(mesa, transport, "app") == 2


async def test_mode_ro_makes_every_repo_read_only(mesa: Mesa, transport: MemoryTransport) -> None:
    await mesa.repos.create("docs")
    await seed(mesa)
    await seed(mesa, "docs")
    before = (await logged(mesa, transport), await logged(mesa, transport, "docs"))
    async with mesa.fs.mount(repos=["app", RepoConfig("docs", bookmark="main")], mode="ro") as fs:
        await assert_read_only(fs, P)
        await assert_read_only(fs, "/acme/docs")
        assert await fs.read("/acme/docs/d/f") == b"data\n"
    assert (await logged(mesa, transport), await logged(mesa, transport, "docs")) == before


# -- realtime semantics --------------------------------------------------------------------


async def test_read_your_writes(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"one")
        assert await fs.read(f"{P}/f") == b"one"
        await fs.write(f"{P}/f", b"two")
        assert await fs.read(f"{P}/f") == b"two"
        await fs.append(f"{P}/f", b"+")
        assert await fs.read(f"{P}/f") == b"two+"
        await fs.rm(f"{P}/f")
        assert not await fs.exists(f"{P}/f")


async def test_another_mount_sees_the_write(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.mkdir(f"{P}/src", recursive=True)
        await a.write(f"{P}/src/main.py", b"print('hello')\n")
        await b.wait_synced()
        assert await b.read(f"{P}/src/main.py") == b"print('hello')\n"
        assert await b.readdir(f"{P}/src") == ["main.py"]
    # A mount opened later starts from the whole log.
    async with mesa.fs.mount(repos=["app"]) as c:
        assert await c.read(f"{P}/src/main.py") == b"print('hello')\n"


async def test_racing_writes_keep_both_sides(mesa: Mesa) -> None:
    path = f"{P}/f"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"base\n")
        await b.wait_synced()
        await asyncio.gather(a.write(path, b"x\n"), b.write(path, b"y\n"))
        await a.wait_synced()
        await b.wait_synced()
        data_a, data_b = await a.read(path), await b.read(path)
        assert data_a == data_b
        assert data_a in (
            conflict_block(b"x\n", b"base\n", b"y\n"),
            conflict_block(b"y\n", b"base\n", b"x\n"),
        )
        lines = data_a.splitlines()
        for line in (b"<<<<<<< conflict 1 of 1", b"------- base", b"base", b"x", b"y"):
            assert lines.count(line) == 1
        assert (await a.stat(path)).size == len(data_a)
        # Writing the conflicted file again resolves it, for everyone.
        await a.write(path, b"resolved\n")
        await b.wait_synced()
        assert await a.read(path) == await b.read(path) == b"resolved\n"


async def test_racing_creates_have_an_empty_base(mesa: Mesa) -> None:
    path = f"{P}/new"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await asyncio.gather(a.write(path, b"x\n"), b.write(path, b"y\n"))
        await a.wait_synced()
        await b.wait_synced()
        assert await a.read(path) == await b.read(path)
        assert await a.read(path) in (
            conflict_block(b"x\n", b"", b"y\n"),
            conflict_block(b"y\n", b"", b"x\n"),
        )


async def test_sequential_writes_never_conflict(mesa: Mesa) -> None:
    path = f"{P}/f"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"base\n")
        await b.wait_synced()
        for i in range(5):  # all within the same millisecond of sequencer time
            await a.write(path, b"a%d\n" % i)
            await b.wait_synced()
            await b.write(path, b"b%d\n" % i)
            await a.wait_synced()
            assert await a.read(path) == await b.read(path) == b"b%d\n" % i


async def test_writes_outside_the_race_window_do_not_conflict(
    mesa: Mesa, clock: ManualClock
) -> None:
    path = f"{P}/f"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"base\n")
        await b.wait_synced()
        await a.write(path, b"x\n")
        clock.advance(5_000)
        await b.write(path, b"y\n")  # b had not seen x, but x is 5 s old: later wins
        await a.wait_synced()
        assert await a.read(path) == await b.read(path) == b"y\n"


async def test_write_racing_rm_of_its_parent_keeps_the_bytes(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.mkdir(f"{P}/d")
        await a.write(f"{P}/d/old", b"old")
        await b.wait_synced()
        await asyncio.gather(a.rm(f"{P}/d", recursive=True), b.write(f"{P}/d/new", b"kept"))
        await a.wait_synced()
        await b.wait_synced()
        for fs in (a, b):
            assert await fs.read(f"{P}/d/new") == b"kept"
            assert not await fs.exists(f"{P}/d/old")


async def test_concurrent_mkdir_is_one_directory(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await asyncio.gather(a.mkdir(f"{P}/d"), b.mkdir(f"{P}/d"))
        await a.wait_synced()
        await b.wait_synced()
        assert await a.readdir(P) == await b.readdir(P) == ["d"]
        assert (await a.stat(f"{P}/d")).is_directory


async def test_concurrent_appends_all_survive(mesa: Mesa) -> None:
    path = f"{P}/log"
    async with (
        mesa.fs.mount(repos=["app"]) as a,
        mesa.fs.mount(repos=["app"]) as b,
        mesa.fs.mount(repos=["app"]) as c,
    ):
        mounts = {"a": a, "b": b, "c": c}
        await a.write(path, b"start\n")
        await b.wait_synced()
        await c.wait_synced()

        async def appends(name: str, fs: MesaFileSystem) -> None:
            for i in range(4):
                await fs.append(path, f"{name}{i}\n".encode())

        await asyncio.gather(*(appends(name, fs) for name, fs in mounts.items()))
        for fs in mounts.values():
            await fs.wait_synced()
        contents = {name: await fs.read(path) for name, fs in mounts.items()}
        assert len(set(contents.values())) == 1
        lines = contents["a"].splitlines()
        assert lines[0] == b"start"
        expected = {f"{n}{i}".encode() for n in mounts for i in range(4)}
        assert sorted(lines[1:]) == sorted(expected)
        # Each mount's own appends stay in its order.
        for name in mounts:
            own = [line for line in lines if line.startswith(name.encode())]
            assert own == [f"{name}{i}".encode() for i in range(4)]


async def test_big_write_goes_through_the_blob_store(
    mesa: Mesa, transport: MemoryTransport, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    path = f"{P}/big.bin"
    cache = tmp_path / "cache"
    async with (
        mesa.fs.mount(repos=["app"]) as a,
        mesa.fs.mount(repos=["app"]) as b,
        mesa.fs.mount(repos=["app"], disk_cache=DiskCacheConfig(path=str(cache))) as c,
    ):
        await a.write(path, data)
        assert await a.read(path) == data
        entries = transport.log_entries(ORG, "app", await main_change(mesa))
        assert len(entries) == 1
        assert len(entries[0].payload) < 64 * 1024  # the bytes are not in the log entry
        await b.wait_synced()
        assert await b.read(path) == data
        assert (await b.stat(path)).size == len(data)
        await c.wait_synced()
        assert await c.read(path) == data
        assert cached_files(cache) == [data]
        assert await c.read(path) == data  # served again (from a cache)


async def test_disk_cache_survives_across_mounts(
    mesa: Mesa, transport: MemoryTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(200_000)
    config = DiskCacheConfig(path=str(tmp_path), max_size_bytes=500_000_000)
    async with mesa.fs.mount(repos=["app"]) as a:
        await a.write(f"{P}/big", data)
    async with mesa.fs.mount(repos=["app"], disk_cache=config) as fs:
        assert await fs.read(f"{P}/big") == data
    assert cached_files(tmp_path) == [data]

    async def unreachable(*args: object) -> bytes:
        raise AssertionError("the blob should come from the disk cache")

    monkeypatch.setattr(transport, "get_blob", unreachable)
    async with mesa.fs.mount(repos=["app"], disk_cache=config) as fs:
        assert await fs.read(f"{P}/big") == data


async def test_big_appends(mesa: Mesa) -> None:
    head, tail = os.urandom(100_000), os.urandom(2 * 1024 * 1024)
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(f"{P}/f", b"start")
        await a.append(f"{P}/f", head)
        await b.wait_synced()
        await b.append(f"{P}/f", tail)
        await a.wait_synced()
        assert await a.read(f"{P}/f") == await b.read(f"{P}/f") == b"start" + head + tail
        assert (await a.stat(f"{P}/f")).size == 5 + len(head) + len(tail)


async def test_small_and_big_contents_round_trip(mesa: Mesa) -> None:
    sizes = [0, 1, 64 * 1024, 64 * 1024 + 1, 1024 * 1024 + 3]
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        blobs = {n: os.urandom(n) for n in sizes}
        for n, data in blobs.items():
            await a.write(f"{P}/f{n}", data)
        await b.wait_synced()
        for n, data in blobs.items():
            assert await b.read(f"{P}/f{n}") == data
            assert (await b.stat(f"{P}/f{n}")).size == n


# -- subscriptions -------------------------------------------------------------------------


async def test_subscribe_with_a_sync_handler(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        seen = Recorder()
        sub = a.subscribe(seen)
        await b.write(f"{P}/x", b"1")
        await seen.wait_event(WatchEvent(f"{P}/x", recursive=False))
        assert all(e.path.startswith(f"{P}/") for e in seen.events)
        await sub.unsubscribe()


async def test_subscribe_with_an_async_handler_sees_the_new_state(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        reads: list[tuple[str, bytes]] = []
        done = asyncio.Event()

        async def on_change(event: WatchEvent) -> None:
            if not event.recursive and await a.exists(event.path):
                reads.append((event.path, await a.read(event.path)))
                done.set()

        sub = a.subscribe(on_change)
        await b.write(f"{P}/x", b"new bytes\n")
        async with asyncio.timeout(2):
            await done.wait()
        assert reads == [(f"{P}/x", b"new bytes\n")]
        await sub.unsubscribe()


async def test_handler_sees_each_state_of_its_own_mount(mesa: Mesa) -> None:
    """Events of this mount's own writes arrive too, and the read shows the write."""
    async with mesa.fs.mount(repos=["app"]) as fs:
        reads: list[bytes] = []
        done = asyncio.Event()

        async def on_change(event: WatchEvent) -> None:
            reads.append(await fs.read(event.path))
            done.set()

        fs.subscribe(on_change)
        await fs.write(f"{P}/x", b"mine")
        async with asyncio.timeout(2):
            await done.wait()
        assert reads == [b"mine"]


async def test_events_for_rm_recursive_and_mv(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await b.mkdir(f"{P}/d/e", recursive=True)
        await b.write(f"{P}/d/e/f", b"1")
        await b.write(f"{P}/x", b"1")
        await a.wait_synced()
        seen = Recorder()
        a.subscribe(seen)
        await b.mv(f"{P}/x", f"{P}/y")
        await seen.wait_for(lambda ev: WatchEvent(f"{P}/y", False) in ev)
        assert WatchEvent(f"{P}/x", False) in seen.events
        await b.mv(f"{P}/d", f"{P}/d2")
        await seen.wait_for(lambda ev: WatchEvent(f"{P}/d2", True) in ev)
        assert WatchEvent(f"{P}/d", True) in seen.events
        seen.events.clear()
        await b.rm(f"{P}/d2", recursive=True)
        await seen.wait_event(WatchEvent(f"{P}/d2", True))
        assert not await a.exists(f"{P}/d2")
        assert seen.events == [WatchEvent(f"{P}/d2", True)]


async def test_unsubscribe_stops_events(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        seen, sentinel = Recorder(), Recorder()
        sub = a.subscribe(seen)
        a.subscribe(sentinel)
        await b.write(f"{P}/x", b"1")
        await seen.wait_event(WatchEvent(f"{P}/x", False))
        await sub.unsubscribe()
        count = len(seen.events)
        await b.write(f"{P}/later", b"2")
        await sentinel.wait_event(WatchEvent(f"{P}/later", False))
        await asyncio.sleep(0.01)
        assert len(seen.events) == count
        await sub.unsubscribe()  # idempotent


async def test_a_failing_handler_does_not_stop_later_events(
    mesa: Mesa, caplog: pytest.LogCaptureFixture
) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        seen = Recorder()

        def flaky(event: WatchEvent) -> None:
            seen(event)
            if event.path.endswith("/boom"):
                raise RuntimeError("handler bug")

        async def flaky_async(event: WatchEvent) -> None:
            await asyncio.sleep(0)
            if event.path.endswith("/boom"):
                raise RuntimeError("async handler bug")

        a.subscribe(flaky)
        a.subscribe(flaky_async)
        await b.write(f"{P}/boom", b"1")
        await b.write(f"{P}/after", b"2")
        await seen.wait_event(WatchEvent(f"{P}/after", False))
        assert [e.path for e in seen.events] == [f"{P}/boom", f"{P}/after"]
        # The mount still works after a handler failed.
        await a.write(f"{P}/mine", b"3")
        await seen.wait_event(WatchEvent(f"{P}/mine", False))


async def test_leaving_the_mount_delivers_queued_events_then_stops(mesa: Mesa) -> None:
    delivered: list[WatchEvent] = []

    async def slow(event: WatchEvent) -> None:
        await asyncio.sleep(0)
        delivered.append(event)

    async with mesa.fs.mount(repos=["app"]) as other:
        async with mesa.fs.mount(repos=["app"]) as fs:
            fs.subscribe(slow)
            for i in range(5):
                await fs.write(f"{P}/f{i}", b"x")
        assert delivered == [WatchEvent(f"{P}/f{i}", False) for i in range(5)]
        await other.write(f"{P}/after-close", b"x")
        await asyncio.sleep(0.01)
        assert len(delivered) == 5


async def test_subscribe_sample_from_the_spec(mesa: Mesa) -> None:
    printed: list[tuple[str, str]] = []
    async with mesa.fs.mount(repos=["app"]) as fs, mesa.fs.mount(repos=["app"]) as other:

        async def on_change(event: WatchEvent) -> None:
            if not event.recursive:
                content = await fs.read(event.path)
                printed.append((event.path, content.decode()))

        subscription = fs.subscribe(on_change)
        await other.write("/acme/app/README.md", b"# hi\n")
        await fs.wait_synced()
        await subscription.unsubscribe()
    assert ("/acme/app/README.md", "# hi\n") in printed


# -- errors --------------------------------------------------------------------------------


async def test_errors_are_builtin_os_errors(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.mkdir(f"{P}/d/sub", recursive=True)
        await fs.write(f"{P}/d/f", b"x")
        await fs.write(f"{P}/file", b"x")
        with pytest.raises(FileNotFoundError):
            await fs.read(f"{P}/missing")
        with pytest.raises(FileNotFoundError):
            await fs.read("/acme/nope/x")
        with pytest.raises(FileNotFoundError):
            await fs.write(f"{P}/no/parent", b"x")
        with pytest.raises(IsADirectoryError):
            await fs.read(f"{P}/d")
        with pytest.raises(IsADirectoryError):
            await fs.read(P)
        with pytest.raises(IsADirectoryError):
            await fs.write(f"{P}/d", b"x")
        with pytest.raises(NotADirectoryError):
            await fs.readdir(f"{P}/file")
        with pytest.raises(NotADirectoryError):
            await fs.read(f"{P}/file/x")
        with pytest.raises(FileExistsError):
            await fs.mkdir(f"{P}/d")
        with pytest.raises(FileExistsError):
            await fs.mkdir(f"{P}/file", recursive=True)
        await fs.mkdir(f"{P}/d", recursive=True)  # an existing directory is fine
        with pytest.raises(OSError) as info:  # noqa: PT011
            await fs.rm(f"{P}/d")
        assert info.value.errno == errno.ENOTEMPTY
        with pytest.raises(FileNotFoundError):
            await fs.rm(f"{P}/missing")
        await fs.rm(f"{P}/missing", force=True)
        with pytest.raises(OSError) as info:  # noqa: PT011
            await fs.mv(f"{P}/d", f"{P}/d/sub/d")
        assert info.value.errno == errno.EINVAL
        with pytest.raises(IsADirectoryError):
            await fs.cp(f"{P}/d", f"{P}/d2")
        await fs.cp(f"{P}/d", f"{P}/d2", recursive=True)
        assert sorted(await fs.readdir(f"{P}/d2")) == ["f", "sub"]
        with pytest.raises(NotImplementedError):
            await fs.link(f"{P}/file", f"{P}/hard")
        assert await fs.readdir(P) == ["d", "d2", "file"]


async def test_symlinks(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.mkdir(f"{P}/src")
        await fs.write(f"{P}/target", b"t")
        await fs.symlink("../target", f"{P}/src/rel")
        await fs.symlink("/acme/app/target", f"{P}/abs")
        await fs.symlink("nowhere", f"{P}/dangling")
        await fs.symlink("loop-b", f"{P}/loop-a")
        await fs.symlink("loop-a", f"{P}/loop-b")
        assert await fs.readlink(f"{P}/src/rel") == "../target"  # stored verbatim
        assert await fs.read(f"{P}/src/rel") == b"t"
        assert await fs.read(f"{P}/abs") == b"t"
        assert await fs.realpath(f"{P}/src/rel") == f"{P}/target"
        st, lst = await fs.stat(f"{P}/src/rel"), await fs.lstat(f"{P}/src/rel")
        assert (st.is_file, st.is_symbolic_link) == (True, False)
        assert (lst.is_file, lst.is_symbolic_link) == (False, True)
        assert not await fs.exists(f"{P}/dangling")
        assert (await fs.lstat(f"{P}/dangling")).is_symbolic_link
        with pytest.raises(OSError) as info:  # noqa: PT011
            await fs.read(f"{P}/loop-a")
        assert info.value.errno == errno.ELOOP
        with pytest.raises(OSError) as info:  # noqa: PT011
            await fs.readlink(f"{P}/target")
        assert info.value.errno == errno.EINVAL
        with pytest.raises(FileExistsError):
            await fs.symlink("x", f"{P}/target")


async def test_resolve_path(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert fs.resolve_path("/acme/app/src", "../x") == "/acme/app/x"
        assert fs.resolve_path("/", "../..") == "/"
        assert fs.resolve_path("/acme/app", "./src/./main.py") == "/acme/app/src/main.py"
        assert fs.resolve_path("/acme/app/src", "/acme/docs/x") == "/acme/docs/x"
        assert not await fs.exists("/acme/app/x")  # nothing was touched


async def test_virtual_levels(mesa: Mesa) -> None:
    await mesa.repos.create("docs")
    await mesa.repos.create("zzz")
    async with mesa.fs.mount(repos=["docs", "app"]) as fs:
        assert await fs.readdir("/") == ["acme"]
        assert sorted(await fs.readdir("/acme")) == ["app", "docs"]
        assert (await fs.stat("/")).is_directory
        assert (await fs.stat("/acme")).is_directory
        assert (await fs.stat("/acme/app")).is_directory
        assert await fs.exists("/acme/app")
        assert not await fs.exists("/acme/zzz")  # exists, but not mounted
        assert not await fs.exists("/other")
        with pytest.raises(FileNotFoundError):
            await fs.readdir("/acme/zzz")
        with pytest.raises(OSError):  # noqa: PT011
            await fs.write("/acme/x", b"no files outside repos")
        with pytest.raises(OSError):  # noqa: PT011
            await fs.mkdir("/acme/new-repo")


async def test_stat_and_chmod(mesa: Mesa, clock: ManualClock) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(f"{P}/f", b"12345")
        await a.chmod(f"{P}/f", 0o755)
        await b.wait_synced()
        st = await b.stat(f"{P}/f")
        assert (st.is_file, st.is_directory, st.is_symbolic_link) == (True, False, False)
        assert st.size == 5
        assert st.mode & 0o7777 == 0o755
        assert isinstance(st.mtime_ms, float)
        assert st.mtime_ms == float(clock.now_ms())


# -- the spec's samples through mesa_sdk ----------------------------------------------------


async def test_spec_samples(mesa: Mesa, tmp_path: Path) -> None:
    await mesa.repos.create("docs")
    docs_change = await main_change(mesa, "docs")
    # The spec's literal change id is well formed; it just names no change here.
    sample = RepoConfig(name="docs", change_id="zyxwvutsrqponmlkzyxwvutsrqponmlk")
    with pytest.raises(NotFoundError):
        async with mesa.fs.mount(repos=[sample]):
            pass
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/README.md", b"# app\n")
        data = await fs.read("/acme/app/README.md")
        assert data.decode() == "# app\n"
        await fs.mkdir("/acme/app/src", recursive=True)
        await fs.write("/acme/app/src/main.py", b"print('hello')\n")
        data = await fs.read("/acme/app/src/main.py")
        assert data == b"print('hello')\n"

    async with mesa.fs.mount(
        repos=[
            RepoConfig(name="app", bookmark="main"),
            RepoConfig(name="docs", change_id=docs_change),
        ]
    ) as fs:
        assert await fs.read("/acme/app/src/main.py") == b"print('hello')\n"
        assert await fs.readdir("/acme/docs") == []

    cache = DiskCacheConfig(path=str(tmp_path / "mesa-cache"), max_size_bytes=500_000_000)
    async with mesa.fs.mount(repos=["acme/app"], ttl=3600, disk_cache=cache) as fs:
        assert await fs.read("/acme/app/README.md") == b"# app\n"


async def test_mount_is_usable_only_inside_its_context(mesa: Mesa) -> None:
    mount = mesa.fs.mount(repos=["app"])
    async with mount as fs:
        await fs.write(f"{P}/f", b"x")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: fs.read(f"{P}/f"),
        lambda: fs.write(f"{P}/f", b"y"),
        lambda: fs.readdir(P),
        fs.wait_synced,
    ]
    for call in calls:
        with pytest.raises(OSError) as info:  # noqa: PT011
            await call()
        assert info.value.errno == errno.EBADF
    # The same Mount object can be entered again, with a fresh filesystem.
    async with mount as again:
        assert again is not fs
        assert await again.read(f"{P}/f") == b"x"


async def test_wait_synced_after_close_fails_instead_of_hanging(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as writer:
        async with mesa.fs.mount(repos=["app"]) as closed:
            pass
        await writer.write(f"{P}/f", b"after close")  # the closed mount will never fold it
        async with asyncio.timeout(2):
            with pytest.raises(OSError) as info:  # noqa: PT011
                await closed.wait_synced()
        assert info.value.errno == errno.EBADF


def test_mesa_sdk_is_an_alias_of_mesa() -> None:
    import mesa
    import mesa_sdk

    for name in mesa.__all__:
        assert getattr(mesa_sdk, name) is getattr(mesa, name)
    assert {"Mesa", "RepoConfig", "DiskCacheConfig", "InvalidOptionsError"} <= set(mesa_sdk.__all__)


async def test_racing_atomic_saves_keep_both_sides(mesa: Mesa) -> None:
    """Write a temporary file, rename it over the target, on two mounts at once.

    Each rename is issued after the other save folded, but the bytes it moves were
    written before: a rename over a file races the writes its bytes had not seen.
    """
    path = f"{P}/f.txt"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"base\n")
        await b.wait_synced()
        await a.write(f"{P}/.t1", b"ONE\n")
        await b.write(f"{P}/.t2", b"TWO\n")
        await a.wait_synced()
        await a.mv(f"{P}/.t1", path)
        await b.wait_synced()  # b has folded a's save before it renames: still a race
        await b.mv(f"{P}/.t2", path)
        await a.wait_synced()
        data = await a.read(path)
        assert data == await b.read(path)
        assert data in (
            conflict_block(b"ONE\n", b"base\n", b"TWO\n"),
            conflict_block(b"TWO\n", b"base\n", b"ONE\n"),
        )
        # The next save by a writer that has seen the conflict resolves it.
        await b.write(f"{P}/.t3", b"THREE\n")
        await b.mv(f"{P}/.t3", path)
        await a.wait_synced()
        assert await a.read(path) == b"THREE\n"


async def test_a_rename_of_bytes_written_after_the_other_save_replaces_it(mesa: Mesa) -> None:
    """The rule is about what the moved bytes had seen: a save composed after the other
    one was folded is sequential, not a race.
    """
    path = f"{P}/g.txt"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"base\n")
        await a.write(f"{P}/.t1", b"ONE\n")
        await a.mv(f"{P}/.t1", path)
        await b.wait_synced()
        await b.write(f"{P}/.t2", b"TWO\n")
        await b.mv(f"{P}/.t2", path)
        await a.wait_synced()
        assert await a.read(path) == await b.read(path) == b"TWO\n"

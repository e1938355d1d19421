"""Per-file metadata through the SDK: semantics, races, carriers, history and cold mounts."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from engine.metadata import MAX_KEY_BYTES, MAX_KEYS, MAX_VALUE_BYTES
from mesa_sdk import InvalidOptionsError, Mesa, MesaFileSystem, RepoConfig, WatchEvent
from tests.mesa.test_sdk import Recorder
from transports.auth import Keyring
from transports.base import ManualClock
from transports.memory import MemoryTransport

P = "/acme/app"
ORG_REPO = {"org": "acme", "repo": "app"}


def seq_of(fs: MesaFileSystem) -> int:
    return fs._repos["app"].replica.seq


async def test_set_merges_keys_and_get_adds_org_and_repo(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        assert await fs.get_metadata(f"{P}/f") == ORG_REPO
        await fs.set_metadata(f"{P}/f", {"status": "draft", "owner": "agent-1"})
        await fs.set_metadata(f"{P}/f", {"status": "done"})
        assert await fs.get_metadata(f"{P}/f") == {
            **ORG_REPO,
            "owner": "agent-1",
            "status": "done",
        }
        # None and "" delete a key; the others stay.
        await fs.set_metadata(f"{P}/f", {"owner": None})
        assert await fs.get_metadata(f"{P}/f") == {**ORG_REPO, "status": "done"}
        await fs.set_metadata(f"{P}/f", {"status": "", "review": "ok"})
        assert await fs.get_metadata(f"{P}/f") == {**ORG_REPO, "review": "ok"}
        # The bytes were never touched.
        assert await fs.read(f"{P}/f") == b"x"


async def test_clear_removes_every_key_and_is_idempotent(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.set_metadata(f"{P}/f", {"a": "1", "b": "2"})
        await fs.clear_metadata(f"{P}/f")
        assert await fs.get_metadata(f"{P}/f") == ORG_REPO
        before = seq_of(fs)
        await fs.clear_metadata(f"{P}/f")  # nothing to clear: nothing logged
        assert seq_of(fs) == before
        assert await fs.get_metadata(f"{P}/f") == ORG_REPO


async def test_directories_symlinks_and_the_repo_root_carry_metadata(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.mkdir(f"{P}/d")
        await fs.write(f"{P}/d/f", b"x")
        await fs.symlink(f"{P}/d/f", f"{P}/link")
        await fs.set_metadata(f"{P}/d", {"kind": "package"})
        await fs.set_metadata(P, {"team": "infra"})
        await fs.set_metadata(f"{P}/link", {"via": "link"})  # follows the symlink
        assert await fs.get_metadata(f"{P}/d") == {**ORG_REPO, "kind": "package"}
        assert await fs.get_metadata(P) == {**ORG_REPO, "team": "infra"}
        assert await fs.get_metadata(f"{P}/d/f") == {**ORG_REPO, "via": "link"}
        assert await fs.get_metadata("/acme") == {"org": "acme"}
        with pytest.raises(PermissionError):
            await fs.set_metadata("/acme", {"k": "v"})


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"org": "x"}, id="reserved-org"),
        pytest.param({"repo": "x"}, id="reserved-repo"),
        pytest.param({"k": 1}, id="int-value"),
        pytest.param({"k": b"v"}, id="bytes-value"),
        pytest.param({"k": ["v"]}, id="list-value"),
        pytest.param({1: "v"}, id="int-key"),
        pytest.param({"": "v"}, id="empty-key"),
        pytest.param({"a b": "v"}, id="space-in-key"),
        pytest.param({"a/b": "v"}, id="slash-in-key"),
        pytest.param({"-a": "v"}, id="leading-dash"),
        pytest.param({"k" * (MAX_KEY_BYTES + 1): "v"}, id="long-key"),
        pytest.param({"k": "v" * (MAX_VALUE_BYTES + 1)}, id="long-value"),
        pytest.param({"k": "é" * (MAX_VALUE_BYTES // 2 + 1)}, id="long-value-in-bytes"),
        pytest.param({"k": "a\x00b"}, id="nul-in-value"),
        pytest.param({"k": "\udc80"}, id="lone-surrogate"),
        pytest.param({f"k{i}": "v" for i in range(MAX_KEYS + 1)}, id="too-many-keys"),
        pytest.param({"ok": "v", "org": "x"}, id="one-bad-key-spoils-the-set"),
        pytest.param([("k", "v")], id="not-a-mapping"),
    ],
)
async def test_invalid_sets_raise_value_error_and_change_nothing(mesa: Mesa, metadata: Any) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.set_metadata(f"{P}/f", {"keep": "me"})
        before = seq_of(fs)
        with pytest.raises(ValueError, match=r"metadata|reserved") as info:
            await fs.set_metadata(f"{P}/f", metadata)
        assert isinstance(info.value, InvalidOptionsError)
        assert seq_of(fs) == before
        assert await fs.get_metadata(f"{P}/f") == {**ORG_REPO, "keep": "me"}


async def test_limits_are_inclusive(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.set_metadata(f"{P}/f", {"k" * MAX_KEY_BYTES: "é" * (MAX_VALUE_BYTES // 2)})
        got = await fs.get_metadata(f"{P}/f")
        assert got["k" * MAX_KEY_BYTES] == "é" * (MAX_VALUE_BYTES // 2)


async def test_the_key_count_limit_counts_keys_already_there(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.set_metadata(f"{P}/f", {f"k{i}": "v" for i in range(MAX_KEYS)})
        with pytest.raises(ValueError, match="over the limit"):
            await fs.set_metadata(f"{P}/f", {"one-more": "v"})
        # Replacing one key by another stays within the limit.
        await fs.set_metadata(f"{P}/f", {"k0": None, "one-more": "v"})
        assert len(await fs.get_metadata(f"{P}/f")) == MAX_KEYS + 2  # + org and repo


async def test_missing_paths_and_read_only_mounts(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        with pytest.raises(FileNotFoundError):
            await fs.set_metadata(f"{P}/nope", {"k": "v"})
        with pytest.raises(FileNotFoundError):
            await fs.get_metadata(f"{P}/nope")
        with pytest.raises(FileNotFoundError):
            await fs.clear_metadata(f"{P}/nope")
        await fs.write(f"{P}/f", b"x")
    async with mesa.fs.mount(repos=[RepoConfig("app", read_only=True)]) as ro:
        with pytest.raises(OSError, match="Read-only") as info:
            await ro.set_metadata(f"{P}/f", {"k": "v"})
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError, match="Read-only") as info:
            await ro.clear_metadata(f"{P}/f")
        assert info.value.errno == errno.EROFS
        assert await ro.get_metadata(f"{P}/f") == ORG_REPO


def conflict(side1: str, base: str, side2: str) -> str:
    """A conflicted key's value: jj's block, as a conflicted file without final newlines."""
    nl = " (no terminating newline)"
    return (
        f"<<<<<<< conflict 1 of 1\n+++++++ side #1{nl}\n{side1}\n"
        f"------- base{nl if base else ''}\n{base}\n"
        f"+++++++ side #2{nl}\n{side2}\n>>>>>>> conflict 1 of 1 ends"
    )


async def test_racing_sets_of_one_key_conflict_until_the_next_set(mesa: Mesa) -> None:
    path = f"{P}/f"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"x")
        await a.set_metadata(path, {"status": "draft"})
        await b.wait_synced()
        await asyncio.gather(
            a.set_metadata(path, {"status": "a-done", "a": "1"}),
            b.set_metadata(path, {"status": "b-done", "b": "2"}),
        )
        await a.wait_synced()
        await b.wait_synced()
        got_a, got_b = await a.get_metadata(path), await b.get_metadata(path)
        assert got_a == got_b
        # Sets of different keys both apply; the racing key keeps both values.
        assert got_a["a"] == "1"
        assert got_a["b"] == "2"
        assert got_a["status"] in (
            conflict("a-done", "draft", "b-done"),
            conflict("b-done", "draft", "a-done"),
        )
        # The bytes did not conflict.
        assert await a.read(path) == b"x"
        # A set by an author who has seen the conflict resolves it.
        await b.set_metadata(path, {"status": "merged"})
        await a.wait_synced()
        assert (await a.get_metadata(path))["status"] == "merged"
        assert await a.get_metadata(path) == await b.get_metadata(path)


async def test_racing_sets_of_a_new_key_have_an_empty_base(mesa: Mesa) -> None:
    path = f"{P}/f"
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(path, b"x")
        await b.wait_synced()
        await asyncio.gather(a.set_metadata(path, {"k": "1"}), b.set_metadata(path, {"k": "2"}))
        await a.wait_synced()
        await b.wait_synced()
        assert (await a.get_metadata(path))["k"] in (conflict("1", "", "2"), conflict("2", "", "1"))


async def test_metadata_events_are_non_recursive_and_reach_other_mounts(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.mkdir(f"{P}/d")
        await b.wait_synced()
        recorder = Recorder()
        sub = b.subscribe(recorder)
        await a.set_metadata(f"{P}/d", {"k": "v"})
        await recorder.wait_event(WatchEvent(f"{P}/d", recursive=False))
        assert (await b.get_metadata(f"{P}/d"))["k"] == "v"  # visible when the event runs
        await a.clear_metadata(f"{P}/d")
        await recorder.wait_for(lambda events: len(events) == 2)
        assert recorder.events == [WatchEvent(f"{P}/d", recursive=False)] * 2
        await sub.unsubscribe()


async def test_mv_and_cp_carry_metadata_and_rm_removes_it(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.mkdir(f"{P}/d")
        await fs.write(f"{P}/d/f", b"x")
        await fs.set_metadata(f"{P}/d", {"dir": "yes"})
        await fs.set_metadata(f"{P}/d/f", {"file": "yes"})
        await fs.mv(f"{P}/d/f", f"{P}/g")
        assert await fs.get_metadata(f"{P}/g") == {**ORG_REPO, "file": "yes"}
        await fs.cp(f"{P}/g", f"{P}/h")
        assert await fs.get_metadata(f"{P}/h") == {**ORG_REPO, "file": "yes"}
        # The copy is independent of its source.
        await fs.set_metadata(f"{P}/h", {"file": "copy"})
        assert (await fs.get_metadata(f"{P}/g"))["file"] == "yes"
        await fs.write(f"{P}/d/inner", b"y")
        await fs.set_metadata(f"{P}/d/inner", {"inner": "1"})
        await fs.cp(f"{P}/d", f"{P}/e", recursive=True)
        await fs.mv(f"{P}/d", f"{P}/moved")
        for top in ("e", "moved"):
            assert await fs.get_metadata(f"{P}/{top}") == {**ORG_REPO, "dir": "yes"}
            assert await fs.get_metadata(f"{P}/{top}/inner") == {**ORG_REPO, "inner": "1"}
        # Renaming over a file: the destination takes the moved file's metadata.
        await fs.mv(f"{P}/g", f"{P}/h")
        assert (await fs.get_metadata(f"{P}/h"))["file"] == "yes"
        await fs.rm(f"{P}/h")
        await fs.write(f"{P}/h", b"new")
        assert await fs.get_metadata(f"{P}/h") == ORG_REPO
        await fs.rm(f"{P}/moved", recursive=True)
        await fs.mkdir(f"{P}/moved")
        assert await fs.get_metadata(f"{P}/moved") == ORG_REPO


async def test_history_and_reads_of_the_past(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.set_metadata(f"{P}/f", {"status": "draft", "owner": "me"})
        await fs.set_metadata(f"{P}/f", {"status": "done", "owner": None})
        await fs.clear_metadata(f"{P}/f")
        history = await fs.changes.history(f"{P}/f")
        assert [h.op for h in history] == [
            "write",
            "set_metadata",
            "set_metadata",
            "clear_metadata",
        ]
        assert history[1].metadata == (("owner", "me"), ("status", "draft"))
        assert history[2].metadata == (("owner", None), ("status", "done"))
        assert history[3].metadata == ()
        assert history[1].paths == (f"{P}/f",)
        assert await fs.get_metadata(f"{P}/f", at=history[0].seq) == ORG_REPO
        assert await fs.get_metadata(f"{P}/f", at=history[1].seq) == {
            **ORG_REPO,
            "owner": "me",
            "status": "draft",
        }
        assert await fs.get_metadata(f"{P}/f", at=history[2].seq) == {
            **ORG_REPO,
            "status": "done",
        }
        assert await fs.get_metadata(f"{P}/f") == ORG_REPO
        with pytest.raises(FileNotFoundError):
            await fs.get_metadata(f"{P}/f", at=0)


def make(snapshot_every: int | None) -> Mesa:
    from tests.mesa.conftest import KEY

    clock = ManualClock()
    keyring = Keyring()
    keyring.add(KEY, "acme")
    return Mesa(
        "acme",
        KEY,
        transport=MemoryTransport(keyring, clock),
        clock=clock,
        snapshot_every=snapshot_every,
    )


@pytest.mark.parametrize("snapshot_every", [None, 3], ids=["whole-log", "snapshot"])
async def test_metadata_survives_a_cold_mount(snapshot_every: int | None) -> None:
    mesa = make(snapshot_every)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as writer:
        await writer.mkdir(f"{P}/d")
        await writer.write(f"{P}/d/f", b"x")
        await writer.set_metadata(f"{P}/d/f", {"status": "done"})
        await writer.set_metadata(f"{P}/d", {"kind": "pkg"})
        await writer.write(f"{P}/tail", b"after the snapshot")
        await writer.set_metadata(f"{P}/tail", {"t": "1"})
        tree_hash = writer._repos["app"].replica.state.tree.hash()
    async with mesa.fs.mount(repos=["app"]) as cold:
        assert cold._repos["app"].replica.state.tree.hash() == tree_hash
        assert await cold.get_metadata(f"{P}/d/f") == {**ORG_REPO, "status": "done"}
        assert await cold.get_metadata(f"{P}/d") == {**ORG_REPO, "kind": "pkg"}
        assert await cold.get_metadata(f"{P}/tail") == {**ORG_REPO, "t": "1"}


async def test_child_changes_and_bookmark_merges_carry_metadata(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.set_metadata(f"{P}/f", {"status": "base", "gone": "soon"})
        base = fs._repos["app"].change_id
        # A child change starts from its parent's metadata.
        left = await fs.changes.new("app", bookmark="main")
        assert await fs.get_metadata(f"{P}/f") == {**ORG_REPO, "gone": "soon", "status": "base"}
        await fs.set_metadata(f"{P}/f", {"status": "left", "gone": None})
        right = await fs.changes.new("app", change_id=base)
        await fs.set_metadata(f"{P}/f", {"reviewed": "yes"})
    await mesa.bookmarks.move("app", "main", change_id=left)
    await mesa.bookmarks.create("app", "feature", change_id=right)
    result = await mesa.bookmarks.merge("app", target="main", source="feature")
    assert not result.is_conflicted
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert fs._repos["app"].change_id == result.change_id
        # Key by key: each side's change survives, the deleted key stays deleted.
        assert await fs.get_metadata(f"{P}/f") == {
            **ORG_REPO,
            "reviewed": "yes",
            "status": "left",
        }


async def test_a_copy_into_another_repo_carries_metadata(mesa: Mesa) -> None:
    await mesa.repos.create("other")
    async with mesa.fs.mount(repos=["app", "other"]) as fs:
        await fs.mkdir(f"{P}/d")
        await fs.write(f"{P}/d/f", b"x")
        await fs.set_metadata(f"{P}/d", {"dir": "1"})
        await fs.set_metadata(f"{P}/d/f", {"file": "1", "status": "done"})
        await fs.write("/acme/other/g", b"old")
        await fs.set_metadata("/acme/other/g", {"stale": "yes"})
        await fs.cp(f"{P}/d", "/acme/other/d", recursive=True)
        await fs.cp(f"{P}/d/f", "/acme/other/g")
        other = {"org": "acme", "repo": "other"}
        assert await fs.get_metadata("/acme/other/d") == {**other, "dir": "1"}
        assert await fs.get_metadata("/acme/other/d/f") == {**other, "file": "1", "status": "done"}
        # Copied over a file, as within a repo: the copy's metadata replaces the old.
        assert await fs.get_metadata("/acme/other/g") == {**other, "file": "1", "status": "done"}

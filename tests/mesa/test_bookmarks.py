"""Bookmarks (docs/versioning.md): create/get/list/move/delete on ``fs.bookmarks`` and
``mesa.bookmarks``, fast-forward-only moves, compare-and-set races, following a pinned
bookmark, and merges (clean, rejected, allowed-conflicted, no-op, delete_source).
"""

from __future__ import annotations

import asyncio

import pytest

from engine.ids import ROOT_CHANGE_ID
from mesa import _bookmarks, instruments
from mesa._records import bookmark_key
from mesa_sdk import (
    Bookmark,
    ConflictError,
    InvalidOptionsError,
    Mesa,
    NotFoundError,
    RepoConfig,
    ValidationError,
    WatchEvent,
)
from tests.mesa.conftest import ORG
from tests.mesa.test_changes import wait_change
from tests.mesa.test_sdk import Recorder, main_change
from transports.memory import MemoryTransport

P = "/acme/app"


async def kv_snapshot(transport: MemoryTransport, mesa: Mesa) -> dict[str, bytes]:
    """Every KV record of the repo, to prove an operation stored nothing."""
    token = mesa.management_token()
    out: dict[str, bytes] = {}
    for key in await transport.kv_keys(token, f"{ORG}.app."):
        entry = await transport.kv_get(token, key)
        assert entry is not None
        out[key] = entry.value
    return out


async def fork(mesa: Mesa, base: str, files: dict[str, bytes], bookmark: str | None = None) -> str:
    """Make a change off ``base`` holding ``files`` (and a bookmark on it); return its id."""
    info = await mesa.changes.create("app", base_change_id=base)
    async with mesa.fs.mount(repos=[RepoConfig("app", change_id=info.change_id)]) as fs:
        for name, data in files.items():
            await fs.write(f"{P}/{name}", data)
    if bookmark is not None:
        await mesa.bookmarks.create("app", bookmark, change_id=info.change_id)
    return info.change_id


# -- the record API ----------------------------------------------------------------------


async def test_fs_bookmarks_create_get_list_move_delete(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        main = fs._repos["app"].change_id
        await fs.bookmarks.create("app", "feature/a")
        await fs.bookmarks.create("acme/app", "feature/b")
        with pytest.raises(FileExistsError):
            await fs.bookmarks.create("app", "feature/a")
        got = await fs.bookmarks.get("app", "feature/a")
        assert got == Bookmark("feature/a", main, is_default=False)
        assert (await fs.bookmarks.get("app", "main")).is_default
        assert await fs.bookmarks.list("app") == ["feature/a", "feature/b", "main"]
        assert await fs.bookmarks.list("app", glob="feature/*") == ["feature/a", "feature/b"]
        child = await fs.changes.new("app", bookmark="main")
        await fs.bookmarks.move("app", "feature/a", change_id=child)
        assert (await fs.bookmarks.get("app", "feature/a")).change_id == child
        await fs.bookmarks.delete("app", "feature/a")
        with pytest.raises(FileNotFoundError):
            await fs.bookmarks.get("app", "feature/a")
        with pytest.raises(FileNotFoundError):
            await fs.bookmarks.delete("app", "feature/a")
        with pytest.raises(FileNotFoundError):
            await fs.bookmarks.move("app", "nope", change_id=child)
        with pytest.raises(FileNotFoundError):
            await fs.bookmarks.move("app", "feature/b", change_id="k" * 32)
        with pytest.raises(ValidationError):
            await fs.bookmarks.delete("app", "main")  # the default bookmark stays
        with pytest.raises(InvalidOptionsError):
            await fs.bookmarks.create("app", "")
        with pytest.raises(InvalidOptionsError):
            await fs.bookmarks.create("app", "bad\nname")


async def test_rest_bookmarks_raise_api_errors(mesa: Mesa) -> None:
    main = await main_change(mesa)
    created = await mesa.bookmarks.create("app", "release", change_id=main)
    assert created == Bookmark("release", main, is_default=False)
    with pytest.raises(ConflictError):
        await mesa.bookmarks.create("app", "release", change_id=main)
    with pytest.raises(NotFoundError):
        await mesa.bookmarks.create("app", "x", change_id="k" * 32)
    with pytest.raises(NotFoundError):
        await mesa.bookmarks.get("app", "nope")
    with pytest.raises(NotFoundError):
        await mesa.bookmarks.delete("app", "nope")
    with pytest.raises(NotFoundError):
        await mesa.bookmarks.list("no-such-repo")
    # A bookmark may point at the root change.
    root = await mesa.bookmarks.create("app", "empty", change_id=ROOT_CHANGE_ID)
    assert root.change_id == ROOT_CHANGE_ID
    assert [b.name for b in await mesa.bookmarks.list("app", glob="e*")] == ["empty"]


async def test_read_only_mounts_cannot_change_bookmarks(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=[RepoConfig("app", read_only=True)]) as fs:
        for call in (
            fs.bookmarks.create("app", "x"),
            fs.bookmarks.delete("app", "main"),
            fs.bookmarks.move("app", "main", change_id=fs._repos["app"].change_id),
        ):
            with pytest.raises(OSError, match="Read-only"):
                await call
        assert await fs.bookmarks.list("app") == ["main"]


# -- fast-forward and compare-and-set ----------------------------------------------------


async def test_moves_advance_history_unless_allow_backwards(mesa: Mesa) -> None:
    main = await main_change(mesa)
    child = await fork(mesa, main, {"a": b"1"})
    grandchild = await fork(mesa, child, {"b": b"2"})
    sibling = await fork(mesa, main, {"c": b"3"})
    await mesa.bookmarks.move("app", "main", change_id=grandchild)  # two steps forward
    for backwards in (child, main, ROOT_CHANGE_ID, sibling):
        with pytest.raises(ValidationError, match="does not advance history"):
            await mesa.bookmarks.move("app", "main", change_id=backwards)
        assert await main_change(mesa) == grandchild
    moved = await mesa.bookmarks.move("app", "main", change_id=sibling, allow_backwards=True)
    assert moved.change_id == sibling
    # Moving onto the same change is not a move at all.
    assert (await mesa.bookmarks.move("app", "main", change_id=sibling)).change_id == sibling


async def test_concurrent_moves_end_in_one_winner_and_a_retryable_conflict(
    mesa: Mesa, transport: MemoryTransport
) -> None:
    """Both writers read the bookmark at the same revision; both try to move it."""
    main = await main_change(mesa)
    a = await fork(mesa, main, {"a": b"1"})
    b = await fork(mesa, main, {"b": b"2"})
    scope = await instruments.repo_store(mesa, "app")
    found = await _bookmarks.get_record(scope, "main")
    assert found is not None
    _, revision = found
    results = await asyncio.gather(
        _bookmarks.cas_move(scope, "main", a, revision),
        _bookmarks.cas_move(scope, "main", b, revision),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Bookmark)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1
    assert len(losers) == 1
    assert await main_change(mesa) == winners[0].change_id  # no lost update


async def test_the_public_move_checks_and_sets_against_the_revision_it_read(
    mesa: Mesa, transport: MemoryTransport
) -> None:
    """Another writer moves main between our read and our write: we get ConflictError."""
    main = await main_change(mesa)
    ours = await fork(mesa, main, {"ours": b"1"})
    theirs = await fork(mesa, main, {"theirs": b"2"})
    original = transport.kv_put

    async def interleaved(token, key, value, *, expected_revision=None):  # type: ignore[no-untyped-def]
        if key == bookmark_key(ORG, "app", "main") and expected_revision:
            transport.kv_put = original  # type: ignore[method-assign]
            await mesa.bookmarks.move("app", "main", change_id=theirs)
        return await original(token, key, value, expected_revision=expected_revision)

    transport.kv_put = interleaved  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="retry"):
        await mesa.bookmarks.move("app", "main", change_id=ours)
    assert await main_change(mesa) == theirs


# -- following ---------------------------------------------------------------------------


async def test_a_mount_pinned_to_a_bookmark_follows_it(mesa: Mesa) -> None:
    main = await main_change(mesa)
    ahead = await fork(mesa, main, {"new.txt": b"new\n"})
    async with (
        mesa.fs.mount(repos=[RepoConfig("app", bookmark="main")]) as pinned,
        mesa.fs.mount(repos=["app"]) as unpinned,
        mesa.fs.mount(repos=[RepoConfig("app", change_id=main)]) as by_id,
    ):
        events = Recorder()
        pinned.subscribe(events)
        await mesa.bookmarks.move("app", "main", change_id=ahead)
        await wait_change(pinned, ahead)
        await events.wait_event(WatchEvent(P, recursive=True))
        assert await pinned.read(f"{P}/new.txt") == b"new\n"
        # A plain repo follows its default bookmark like a named one; a change id does not.
        await wait_change(unpinned, ahead)
        assert by_id._repos["app"].change_id == main
        # Editing a change by id stops following; a deleted bookmark is not followed.
        await pinned.changes.edit("app", change_id=main)
        await mesa.bookmarks.create("app", "gone", change_id=main)
        await pinned.changes.edit("app", bookmark="gone")
        await mesa.bookmarks.delete("app", "gone")
        await mesa.bookmarks.move("app", "main", change_id=main, allow_backwards=True)
        await asyncio.sleep(0.05)
        assert pinned._repos["app"].change_id == main


# -- merge -------------------------------------------------------------------------------


async def test_a_clean_merge_makes_a_merge_change_and_moves_the_target(mesa: Mesa) -> None:
    main = await main_change(mesa)
    feature = await fork(mesa, main, {"feature.txt": b"f\n"}, bookmark="feature")
    result = await mesa.bookmarks.merge("app", target="main", source="feature", message="merge")
    assert result.merge_type == "merge_commit"
    assert (result.target, result.source, result.is_conflicted) == ("main", "feature", False)
    assert not result.source_deleted
    assert await main_change(mesa) == result.change_id
    info = await mesa.changes.get("app", result.change_id)
    assert (info.parents, info.message, info.commit_oid) == (
        (main, feature),
        "merge",
        result.commit_oid,
    )
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert await fs.read(f"{P}/feature.txt") == b"f\n"
    assert (await mesa.bookmarks.get("app", "feature")).change_id == feature


async def test_a_conflicted_merge_is_rejected_and_stores_nothing(
    mesa: Mesa, transport: MemoryTransport
) -> None:
    main = await main_change(mesa)
    base = await fork(mesa, main, {"f": b"base\n"})
    await mesa.bookmarks.move("app", "main", change_id=base)
    left = await fork(mesa, base, {"f": b"left\n"})
    await mesa.bookmarks.move("app", "main", change_id=left)
    await fork(mesa, base, {"f": b"right\n", "clean": b"c\n"}, bookmark="feature")
    before = await kv_snapshot(transport, mesa)
    with pytest.raises(ConflictError) as info:
        await mesa.bookmarks.merge("app", target="main", source="feature", delete_source=True)
    assert info.value.body["error"]["code"] == "MERGE_CONFLICT"
    assert info.value.body["error"]["details"]["conflict_paths"] == ["f"]
    assert await kv_snapshot(transport, mesa) == before
    # Allowed: the target moves to a conflicted merge change.
    result = await mesa.bookmarks.merge(
        "app", target="main", source="feature", allow_conflicted=True
    )
    assert (result.is_conflicted, result.conflict_paths) == (True, ("f",))
    assert await main_change(mesa) == result.change_id
    assert (await mesa.changes.get("app", result.change_id)).conflicted_paths == ("f",)
    # The diff from the target shows the conflict with its markers inline.
    diff = await mesa.diffs.get("app", base_change_id=left, head_change_id=result.change_id)
    assert [e.path for e in diff.conflicted_entries] == ["f"]
    assert [e.path for e in diff.entries] == ["clean"]
    assert diff.stats.conflicted_entries == 1
    assert "+<<<<<<< conflict 1 of 1\n" in diff.patch
    assert "+right\n" in diff.patch


async def test_merging_a_bookmark_into_itself_or_an_equal_one_is_a_no_op(mesa: Mesa) -> None:
    main = await main_change(mesa)
    await mesa.bookmarks.create("app", "same", change_id=main)
    before = await mesa.changes.list("app")
    result = await mesa.bookmarks.merge("app", target="main", source="same", delete_source=True)
    assert (result.merge_type, result.change_id, result.source_deleted) == ("no_op", main, True)
    assert await mesa.changes.list("app") == before
    assert [b.name for b in await mesa.bookmarks.list("app")] == ["main"]
    with pytest.raises(ValidationError):
        await mesa.bookmarks.merge("app", target="main", source="main", delete_source=True)
    with pytest.raises(NotFoundError):
        await mesa.bookmarks.merge("app", target="main", source="nope")


async def test_merge_base_is_the_state_the_source_forked_from(mesa: Mesa) -> None:
    """Writes to the target after the fork are the target's own: the merge keeps them, and a
    file only the source changed takes the source's bytes."""
    async with mesa.fs.mount(repos=[RepoConfig("app", bookmark="main")]) as on_main:
        await on_main.write(f"{P}/shared", b"v1\n")
        await on_main.write(f"{P}/theirs", b"t1\n")
        feature = (await mesa.changes.create("app", bookmark="main")).change_id
        await mesa.bookmarks.create("app", "feature", change_id=feature)
        await on_main.write(f"{P}/shared", b"v2 on main\n")  # after the fork
        async with mesa.fs.mount(repos=[RepoConfig("app", change_id=feature)]) as agent:
            await agent.write(f"{P}/theirs", b"t2 from feature\n")
        result = await mesa.bookmarks.merge("app", target="main", source="feature")
        assert not result.is_conflicted
        await wait_change(on_main, result.change_id)
        assert await on_main.read(f"{P}/shared") == b"v2 on main\n"
        assert await on_main.read(f"{P}/theirs") == b"t2 from feature\n"


async def test_merging_again_after_more_work_uses_the_newer_seal(mesa: Mesa) -> None:
    """A second merge of the same source brings only what changed since the first."""
    main = await main_change(mesa)
    await fork(mesa, main, {"f": b"1\n"}, bookmark="feature")
    first = await mesa.bookmarks.merge("app", target="main", source="feature")
    feature = (await mesa.bookmarks.get("app", "feature")).change_id
    async with mesa.fs.mount(repos=[RepoConfig("app", change_id=feature)]) as agent:
        await agent.write(f"{P}/g", b"2\n")
    async with mesa.fs.mount(repos=[RepoConfig("app", bookmark="main")]) as on_main:
        await on_main.write(f"{P}/f", b"1 edited on main\n")
    second = await mesa.bookmarks.merge("app", target="main", source="feature")
    assert not second.is_conflicted
    info = await mesa.changes.get("app", second.change_id)
    assert info.parents == (first.change_id, feature)
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert await fs.read(f"{P}/f") == b"1 edited on main\n"
        assert await fs.read(f"{P}/g") == b"2\n"


async def test_merging_an_already_merged_source_is_a_no_op_until_it_changes(mesa: Mesa) -> None:
    main = await main_change(mesa)
    feature = await fork(mesa, main, {"feature.txt": b"f\n"}, bookmark="feature")
    first = await mesa.bookmarks.merge("app", target="main", source="feature")
    assert first.merge_type == "merge_commit"
    again = await mesa.bookmarks.merge("app", target="main", source="feature")
    assert (again.merge_type, again.change_id) == ("no_op", first.change_id)
    assert await main_change(mesa) == first.change_id
    # The source written to after the merge is no longer contained: a real merge.
    async with mesa.fs.mount(repos=[RepoConfig("app", change_id=feature)]) as fs:
        await fs.write(f"{P}/later.txt", b"later\n")
    third = await mesa.bookmarks.merge("app", target="main", source="feature")
    assert third.merge_type == "merge_commit"
    assert third.change_id != first.change_id

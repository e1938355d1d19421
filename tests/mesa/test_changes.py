"""Changes (docs/versioning.md): new, edit, current, list, checkpoint, sealing, switching,
snapshots of bases, history and reads of the past, diffs, repos.delete, and an agent's
whole session ending in a merge that a mount pinned to ``main`` sees.

Everything runs on the memory transport with the shared `ManualClock` (conftest.py);
the clock moves between steps so "most recent first" is decided by time.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import re

import pytest

from engine.ids import ROOT_CHANGE_ID
from mesa import _changes
from mesa._cli_vcs import register, run_async
from mesa._records import ChangeRecord, bookmark_key, change_key, snapshot_key
from mesa_sdk import (
    ConflictError,
    InvalidOptionsError,
    Mesa,
    MesaFileSystem,
    NotFoundError,
    RepoConfig,
    WatchEvent,
)
from tests.mesa.conftest import ORG
from tests.mesa.test_sdk import Recorder, conflict_block, main_change
from tests.mesa.test_snapshots import make
from transports.base import ManualClock
from transports.memory import MemoryTransport

P = "/acme/app"
CHANGE_ID = re.compile(r"^[k-z]{32}$")


async def record_of(mesa: Mesa, change_id: str, repo: str = "app") -> ChangeRecord:
    entry = await mesa.transport.kv_get(mesa.management_token(), change_key(ORG, repo, change_id))
    assert entry is not None
    return ChangeRecord.decode(entry.value)


async def wait_change(fs: MesaFileSystem, change_id: str, repo: str = "app") -> None:
    """Wait (at most 2 s) until ``fs`` has switched ``repo`` to ``change_id``."""
    mounted = fs._repos[repo]
    switched = asyncio.Event()
    mounted.add_switch_listener(lambda _: switched.set())
    async with asyncio.timeout(2):
        while mounted.change_id != change_id:
            switched.clear()
            await switched.wait()


# -- new / edit / current ----------------------------------------------------------------


async def test_new_forks_off_main_and_switches_the_mount(mesa: Mesa, clock: ManualClock) -> None:
    async with mesa.fs.mount(repos=["app"]) as agent, mesa.fs.mount(repos=["app"]) as other:
        await agent.write(f"{P}/readme", b"hello\n")
        main = await main_change(mesa)
        events = Recorder()
        agent.subscribe(events)
        clock.advance(1000)
        child = await agent.changes.new("app", bookmark="main", message="try things")
        assert CHANGE_ID.match(child)
        assert child not in (main, ROOT_CHANGE_ID)
        await events.wait_event(WatchEvent(P, recursive=True))
        current = await agent.changes.current("app")
        assert (current.change_id, current.parents) == (child, (main,))
        assert current.message == "try things"
        # The child starts from main's tree; its own writes stay in the child.
        assert await agent.read(f"{P}/readme") == b"hello\n"
        await agent.write(f"{P}/readme", b"changed in child\n")
        await other.wait_synced()
        assert await other.read(f"{P}/readme") == b"hello\n"
        assert await main_change(mesa) == main  # new moves no bookmark
        record = await record_of(mesa, child)
        assert record.parents == (main,)
        assert record.base is not None
        assert record.base.seals[0].change == main


async def test_new_needs_exactly_one_existing_source(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        before = fs._repos["app"].change_id
        with pytest.raises(InvalidOptionsError):
            await fs.changes.new("app")
        with pytest.raises(InvalidOptionsError):
            await fs.changes.new("app", bookmark="main", change_id=before)
        with pytest.raises(FileNotFoundError):
            await fs.changes.new("app", bookmark="nope")
        with pytest.raises(FileNotFoundError):
            await fs.changes.new("app", change_id="k" * 32)
        with pytest.raises(FileNotFoundError):
            await fs.changes.new("elsewhere", bookmark="main")
        with pytest.raises(InvalidOptionsError):
            await fs.changes.new("app", change_id="not-an-id")
        assert fs._repos["app"].change_id == before


async def test_a_sealed_parent_does_not_leak_into_its_child(mesa: Mesa, clock: ManualClock) -> None:
    """Writes to the parent after the fork stay in the parent (no automatic rebase)."""
    async with mesa.fs.mount(repos=["app"]) as on_main, mesa.fs.mount(repos=["app"]) as agent:
        await on_main.write(f"{P}/a", b"1\n")
        await agent.wait_synced()
        child = await agent.changes.new("app", bookmark="main")
        await on_main.write(f"{P}/a", b"2\n")
        await on_main.write(f"{P}/late", b"late\n")
        await agent.wait_synced()
        assert await agent.read(f"{P}/a") == b"1\n"
        assert not await agent.exists(f"{P}/late")
        # A fresh mount of the child agrees.
        async with mesa.fs.mount(repos=[RepoConfig("app", change_id=child)]) as fresh:
            assert await fresh.read(f"{P}/a") == b"1\n"
            assert not await fresh.exists(f"{P}/late")


async def test_the_parents_versions_do_not_race_the_childs_writes(
    mesa: Mesa, clock: ManualClock
) -> None:
    """A write right after the fork, inside the race window of the parent's last write,
    replaces the value: the parent's version history did not come along."""
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(f"{P}/f", b"from a\n")
        await b.wait_synced()
        await b.changes.new("app", bookmark="main")
        await b.write(f"{P}/f", b"from b\n")
        assert await b.read(f"{P}/f") == b"from b\n"


async def test_edit_checks_out_an_existing_change_and_never_creates_one(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        main = await main_change(mesa)
        child = await fs.changes.new("app", bookmark="main")
        await fs.write(f"{P}/in-child", b"x")
        keys = await mesa.transport.kv_keys(mesa.management_token(), f"{ORG}.app.change.")
        assert await fs.changes.edit("app", change_id=main) == main
        assert fs._repos["app"].change_id == main
        assert not await fs.exists(f"{P}/in-child")
        assert await fs.changes.edit("app", change_id=child) == child
        assert await fs.read(f"{P}/in-child") == b"x"
        assert await mesa.transport.kv_keys(mesa.management_token(), f"{ORG}.app.change.") == keys
        with pytest.raises(InvalidOptionsError):
            await fs.changes.edit("app", change_id=ROOT_CHANGE_ID)
        with pytest.raises(FileNotFoundError):
            await fs.changes.edit("app", bookmark="nope")
        assert fs._repos["app"].change_id == child


async def test_a_write_waiting_for_a_switch_lands_in_the_new_change(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        main = await main_change(mesa)
        repo = fs._repos["app"]
        async with repo.exclusive():
            write = asyncio.create_task(fs.write(f"{P}/w", b"w"))
            await asyncio.sleep(0.01)
            assert not write.done()  # held while the repo is exclusive
            child = await _changes.create_child(
                repo.store, main, _changes.Folded(repo.replica.state, 0), message="", author="t"
            )
            await repo.switch_locked(child.change_id, follow=None)
        await write
        assert await fs.read(f"{P}/w") == b"w"
        await fs.changes.edit("app", change_id=main)
        assert not await fs.exists(f"{P}/w")


async def test_a_read_only_mount_may_edit_but_not_create(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        child = await fs.changes.new("app", bookmark="main")
    async with mesa.fs.mount(repos=[RepoConfig("app", read_only=True)]) as ro:
        with pytest.raises(OSError, match="Read-only") as info:
            await ro.changes.new("app", bookmark="main")
        assert info.value.errno == errno.EROFS
        assert await ro.changes.edit("app", change_id=child) == child


# -- conflicts, infos, list --------------------------------------------------------------


async def test_a_conflicted_change_reports_its_conflicted_paths(
    mesa: Mesa, clock: ManualClock
) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        await a.write(f"{P}/f", b"base\n")
        await b.wait_synced()
        clock.advance(5000)
        await asyncio.gather(a.write(f"{P}/f", b"a\n"), b.write(f"{P}/f", b"b\n"))
        await a.wait_synced()
        info = await a.changes.current("app")
        assert info.is_conflicted
        assert info.conflicted_paths == ("f",)
        # The REST-like view folds the same tree without a mount.
        same = await mesa.changes.get("app", info.change_id)
        assert (same.commit_oid, same.conflicted_paths) == (info.commit_oid, ("f",))
        await a.write(f"{P}/f", b"resolved\n")
        assert not (await a.changes.current("app")).is_conflicted
        assert (await a.changes.current("app")).commit_oid != info.commit_oid


async def test_list_is_reachable_changes_most_recent_first(mesa: Mesa, clock: ManualClock) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        first = fs._repos["app"].change_id
        clock.advance(1000)
        second = await fs.changes.new("app", change_id=first, message="second")
        clock.advance(1000)
        third = await fs.changes.new("app", change_id=second, message="third")
        await fs.write(f"{P}/x", b"x")
        clock.advance(1000)
        await fs.changes.new("app", change_id=first, message="a sibling, not reachable")
        await fs.changes.edit("app", change_id=third)
        listed = await fs.changes.list("app")
        assert [i.change_id for i in listed] == [third, second, first]
        assert listed[0].message == "third"
        assert [i.change_id for i in await fs.changes.list("app", limit=2)] == [third, second]
        assert len(await fs.changes.list("app", limit=0)) == 3
        with pytest.raises(InvalidOptionsError):
            await fs.changes.list("app", limit=-1)
        # commit oids are 40 hex, differ by change, and match the REST-like view.
        oids = [i.commit_oid for i in listed]
        assert all(re.fullmatch(r"[0-9a-f]{40}", oid) for oid in oids)
        assert len(set(oids)) == 3
        rest = await mesa.changes.get("app", third)
        assert rest.commit_oid == listed[0].commit_oid


# -- checkpoint --------------------------------------------------------------------------


async def test_checkpoint_describes_forks_and_advances_the_bookmark(
    mesa: Mesa, clock: ManualClock
) -> None:
    async with mesa.fs.mount(repos=[RepoConfig("app", bookmark="main")]) as fs:
        saved = fs._repos["app"].change_id
        await fs.write(f"{P}/work", b"done\n")
        clock.advance(1000)
        result = await fs.changes.checkpoint("app", message="did the work")
        assert result.saved_change_id == saved
        active = result.active_change_id
        assert active != saved
        assert fs._repos["app"].change_id == active
        assert await main_change(mesa) == active
        assert (await record_of(mesa, saved)).message == "did the work"
        assert (await record_of(mesa, active)).parents == (saved,)
        assert await fs.read(f"{P}/work") == b"done\n"
        assert result.saved_change_oid == (await mesa.changes.get("app", saved)).commit_oid
        assert result.active_change_oid == (await fs.changes.current("app")).commit_oid
        # None keeps the description of the (new) current change; "" clears one.
        await fs.changes.checkpoint("app")
        assert (await record_of(mesa, active)).message == ""
        await fs.changes.checkpoint("app", message="")
        assert (await record_of(mesa, saved)).message == "did the work"


async def test_checkpoint_needs_a_bookmark_on_the_current_change(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        child = await fs.changes.new("app", bookmark="main")
        with pytest.raises(InvalidOptionsError, match="bookmark"):
            await fs.changes.checkpoint("app")
        assert fs._repos["app"].change_id == child


async def test_checkpoint_losing_the_bookmark_race_is_a_retryable_conflict(
    mesa: Mesa, transport: MemoryTransport
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        saved = fs._repos["app"].change_id
        changes_before = await transport.kv_keys(mesa.management_token(), f"{ORG}.app.change.")
        original = transport.kv_put

        async def racing_put(token, key, value, *, expected_revision=None):  # type: ignore[no-untyped-def]
            if key == bookmark_key(ORG, "app", "main") and expected_revision:
                # Someone else moves main first (a plain put, as another writer's CAS).
                await original(token, key, value)
            return await original(token, key, value, expected_revision=expected_revision)

        transport.kv_put = racing_put  # type: ignore[method-assign]
        with pytest.raises(ConflictError):
            await fs.changes.checkpoint("app")
        transport.kv_put = original  # type: ignore[method-assign]
        # The mount stayed; the orphan change was removed again.
        assert fs._repos["app"].change_id == saved
        after = await transport.kv_keys(mesa.management_token(), f"{ORG}.app.change.")
        assert after == changes_before


# -- snapshots of bases ------------------------------------------------------------------


async def test_a_child_mount_starts_from_the_sealed_base_and_folds_only_its_tail() -> None:
    mesa, transport = make(snapshot_every=None)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        for i in range(30):
            await fs.write(f"{P}/f{i % 5}", f"v{i}".encode())
        parent = fs._repos["app"].change_id
        child = await fs.changes.new("app", change_id=parent)
        for i in range(3):
            await fs.write(f"{P}/c{i}", b"c")
        token = fs._repos["app"].token
    # new sealed the parent: its snapshot record names the state after 30 entries.
    sealed = await transport.kv_get(token, snapshot_key(ORG, "app", parent))
    assert sealed is not None
    transport.delivered = 0
    async with mesa.fs.mount(repos=[RepoConfig("app", change_id=child)]) as fresh:
        assert transport.delivered == 3  # the child's own tail, nothing of the parent
        assert await fresh.read(f"{P}/f4") == b"v29"
        assert sorted(await fresh.readdir(P)) == sorted(
            [f"f{i}" for i in range(5)] + [f"c{i}" for i in range(3)]
        )
    transport.delivered = 0
    async with mesa.fs.mount(repos=[RepoConfig("app", change_id=parent)]):
        assert transport.delivered == 0  # the parent starts from its seal too
    await transport.aclose()


async def test_a_mount_of_a_change_with_an_unreadable_base_fails_clearly(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        child = await fs.changes.new("app", bookmark="main")
    record = await record_of(mesa, child)
    assert record.base is not None
    broken = ChangeRecord(
        child,
        record.parents,
        base=type(record.base)("0" * 64, 1, record.base.seals),
    )
    await mesa.transport.kv_put(
        mesa.management_token(), change_key(ORG, "app", child), broken.encode()
    )
    with pytest.raises(Exception, match="base of change"):
        async with mesa.fs.mount(repos=[RepoConfig("app", change_id=child)]):
            pass


# -- history -----------------------------------------------------------------------------


async def test_history_read_at_and_restore(mesa: Mesa, transport: MemoryTransport) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/notes", b"v1\n")
        await fs.write(f"{P}/other", b"unrelated\n")
        await fs.write(f"{P}/notes", b"v2\n")
        await fs.mkdir(f"{P}/d")
        await fs.mv(f"{P}/notes", f"{P}/d/notes")
        history = await fs.changes.history(f"{P}/notes")
        assert [h.op for h in history] == ["write", "write", "mv"]
        assert history[0].author == fs.mount_id
        assert history[-1].paths == (f"{P}/notes", f"{P}/d/notes")
        v1, v2 = history[0].seq, history[1].seq
        assert await fs.read(f"{P}/notes", at=v1) == b"v1\n"
        assert await fs.read(f"{P}/notes", at=v2) == b"v2\n"
        assert await fs.read(f"{P}/notes", at=v2 - 1) == b"v1\n"
        with pytest.raises(FileNotFoundError):
            await fs.read(f"{P}/notes", at=0)  # the base tree of the first change is empty
        with pytest.raises(FileNotFoundError):
            await fs.read(f"{P}/notes", at=history[-1].seq)  # moved away by then
        with pytest.raises(IsADirectoryError):
            await fs.read(f"{P}/d", at=history[-1].seq)
        with pytest.raises(InvalidOptionsError):
            await fs.read(f"{P}/notes", at=-1)
        # Restore brings the old bytes back as a new write: the log only grows.
        entries = len(transport.log_entries(ORG, "app", fs._repos["app"].change_id))
        await fs.changes.restore(f"{P}/notes", at=v1)
        assert await fs.read(f"{P}/notes") == b"v1\n"
        assert len(transport.log_entries(ORG, "app", fs._repos["app"].change_id)) == entries + 1
        assert [h.op for h in await fs.changes.history(f"{P}/d")] == ["mkdir", "mv"]


async def test_read_at_starts_from_the_newest_snapshot_at_or_before_it() -> None:
    mesa, transport = make(snapshot_every=10)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        for i in range(25):
            await fs.write(f"{P}/f", f"v{i}".encode())
        history = await fs.changes.history(f"{P}/f")
        transport.delivered = 0
        assert await fs.read(f"{P}/f", at=history[14].seq) == b"v14"
        assert transport.delivered == 5  # snapshot after entry 10, then entries 11..15
        transport.delivered = 0
        assert await fs.read(f"{P}/f", at=history[3].seq) == b"v3"
        assert transport.delivered == 4  # no snapshot that early: from the base
    await transport.aclose()


async def test_a_read_of_the_past_follows_symlinks_inside_the_repo(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.mkdir(f"{P}/d")
        await fs.write(f"{P}/d/t", b"old\n")
        await fs.symlink("d/t", f"{P}/rel")
        await fs.symlink(f"{P}/d/t", f"{P}/abs")
        await fs.symlink("/acme/docs/x", f"{P}/out")
        at = fs._repos["app"].replica.seq
        await fs.write(f"{P}/d/t", b"new\n")
        assert await fs.read(f"{P}/rel", at=at) == b"old\n"
        assert await fs.read(f"{P}/abs", at=at) == b"old\n"
        with pytest.raises(FileNotFoundError):
            await fs.read(f"{P}/out", at=at)


# -- diffs and repos ---------------------------------------------------------------------


async def test_diff_between_changes_and_of_a_change(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/keep", b"same\n")
        await fs.write(f"{P}/edit", b"1\n2\n")
        main = fs._repos["app"].change_id
        child = await fs.changes.new("app", change_id=main)
        await fs.write(f"{P}/edit", b"1\ntwo\n")
        await fs.write(f"{P}/new", b"hi\n")
        await fs.rm(f"{P}/keep")
    diff = await mesa.diffs.get("app", base_change_id=main, head_change_id=child)
    assert [(e.path, e.status) for e in diff.entries] == [
        ("edit", "modified"),
        ("keep", "deleted"),
        ("new", "added"),
    ]
    assert (diff.stats.additions, diff.stats.deletions) == (2, 2)
    assert "+two\n" in diff.patch
    assert "+++ /dev/null\n" in diff.patch
    # Without a base: what the change itself did (against its sealed base).
    own = await mesa.diffs.get("app", head_change_id=child)
    assert own.base_change_id == main
    assert own.entries == diff.entries
    with pytest.raises(NotFoundError):
        await mesa.diffs.get("app", head_change_id="k" * 32)


async def test_repos_delete_removes_the_records(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write(f"{P}/f", b"x")
        await fs.changes.new("app", bookmark="main")
    await mesa.repos.create("keep")
    await mesa.repos.delete("app")
    assert await mesa.transport.kv_keys(mesa.management_token(), f"{ORG}.app.") == []
    assert [r.name for r in await mesa.repos.list()] == ["keep"]
    with pytest.raises(NotFoundError):
        await mesa.repos.get("app")
    with pytest.raises(NotFoundError):
        await mesa.repos.delete("app")
    # The name can be used again: a fresh repo, empty.
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert await fs.readdir(P) == []


# -- an agent's session --------------------------------------------------------------------


async def test_agent_session_new_edits_checkpoint_merge_seen_by_a_mount_on_main(
    mesa: Mesa, clock: ManualClock
) -> None:
    """The issue's end-to-end session: a new change off main, edits, a checkpoint, a merge
    back into main; another mount pinned to main then sees the merged files and an event."""
    async with mesa.fs.mount(repos=[RepoConfig("app", bookmark="main")]) as watcher:
        await watcher.write(f"{P}/README.md", b"# app\n")
        events = Recorder()
        watcher.subscribe(events)
        async with mesa.fs.mount(repos=["app"]) as agent:
            await agent.wait_synced()
            clock.advance(1000)
            work = await agent.changes.new("app", bookmark="main", message="agent work")
            await agent.bookmarks.create("app", "agent/task-1")
            await agent.mkdir(f"{P}/src")
            await agent.write(f"{P}/src/main.py", b"print('hi')\n")
            await agent.append(f"{P}/README.md", b"agent was here\n")
            clock.advance(1000)
            checkpoint = await agent.changes.checkpoint("app", message="first pass")
            assert checkpoint.saved_change_id == work
            await agent.write(f"{P}/src/util.py", b"X = 1\n")
            # Meanwhile someone edits main (another file): the merge keeps both.
            await watcher.write(f"{P}/NOTES", b"from main\n")
            main_before = watcher._repos["app"].change_id
            clock.advance(1000)
            merged = await mesa.bookmarks.merge(
                "app", target="main", source="agent/task-1", delete_source=True
            )
        assert merged.merge_type == "merge_commit"
        assert not merged.is_conflicted
        assert merged.source_deleted
        await wait_change(watcher, merged.change_id)
        await events.wait_event(WatchEvent(P, recursive=True))
        assert await watcher.read(f"{P}/src/main.py") == b"print('hi')\n"
        assert await watcher.read(f"{P}/src/util.py") == b"X = 1\n"
        assert await watcher.read(f"{P}/README.md") == b"# app\nagent was here\n"
        assert await watcher.read(f"{P}/NOTES") == b"from main\n"
        info = await watcher.changes.current("app")
        assert info.change_id == merged.change_id
        assert info.parents == (main_before, checkpoint.active_change_id)
        # The watcher keeps working on main, in realtime, on the merge change.
        await watcher.write(f"{P}/after", b"ok\n")
        assert await main_change(mesa) == merged.change_id
        assert [b.name for b in await mesa.bookmarks.list("app")] == ["main"]


async def test_a_conflicted_merge_reads_back_like_a_realtime_race(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=[RepoConfig("app", bookmark="main")]) as fs:
        await fs.write(f"{P}/f", b"base\n")
        await fs.changes.new("app", bookmark="main")
        await fs.bookmarks.create("app", "feature")
        await fs.write(f"{P}/f", b"feature side\n")
        await fs.changes.edit("app", bookmark="main")
        await fs.write(f"{P}/f", b"main side\n")
        result = await mesa.bookmarks.merge(
            "app", target="main", source="feature", allow_conflicted=True
        )
        await wait_change(fs, result.change_id)
        assert result.conflict_paths == ("f",)
        block = conflict_block(b"main side\n", b"base\n", b"feature side\n")
        assert await fs.read(f"{P}/f") == block
        assert (await fs.changes.current("app")).conflicted_paths == ("f",)
        await fs.write(f"{P}/f", b"resolved\n")  # a write resolves it
        assert not (await fs.changes.current("app")).is_conflicted


# -- the CLI -----------------------------------------------------------------------------


async def cli(mesa: Mesa, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``mesa <argv>`` (the version-control commands) against ``mesa``; return code, stdout."""
    parser = argparse.ArgumentParser(prog="mesa")
    register(parser.add_subparsers(dest="command", required=True))
    code = await run_async(parser.parse_args(argv), client=mesa)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_cli_new_log_show_bookmark_merge(
    mesa: Mesa, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    main = await main_change(mesa)
    clock.advance(1000)
    code, out = await cli(mesa, capsys, "new", "-R", "app", "-m", "cli work")
    assert code == 0
    work = out.strip()
    assert CHANGE_ID.match(work)
    async with mesa.fs.mount(repos=[RepoConfig("app", change_id=work)]) as fs:
        await fs.write(f"{P}/hello.txt", b"hi\n")
    code, out = await cli(mesa, capsys, "bookmark", "create", "-R", "app", "topic", "-r", work[:8])
    assert (code, out) == (0, f"created topic at {work[:12]}\n")
    code, out = await cli(mesa, capsys, "bookmark", "list", "-R", "app")
    assert out == f"main: {main[:12]} (default)\ntopic: {work[:12]}\n"
    code, out = await cli(mesa, capsys, "log", "-R", "app", "topic")
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [["○", work[:12]], ["@", main[:12]]]
    assert "topic" in lines[0]
    assert lines[0].endswith("cli work")
    assert lines[1].endswith("(no description set)")
    code, out = await cli(mesa, capsys, "show", "-R", "app", "topic")
    assert f"Change ID: {work}" in out
    assert "    cli work\n" in out
    assert "+++ b/hello.txt\n@@ -0,0 +1 @@\n+hi\n" in out
    code, out = await cli(mesa, capsys, "show", "-R", "app", "topic", "--name-only")
    assert out.endswith("\nA hello.txt\n")
    code, out = await cli(mesa, capsys, "merge", "-R", "app", "topic", "--delete-source")
    assert code == 0
    assert "merged topic into main" in out
    assert "deleted topic" in out
    async with mesa.fs.mount(repos=["app"]) as fs:
        assert await fs.read(f"{P}/hello.txt") == b"hi\n"
    code, out = await cli(mesa, capsys, "bookmark", "move", "-R", "app", "main", "-r", main)
    assert code == 1
    assert "does not advance history" in out
    code, out = await cli(
        mesa, capsys, "bookmark", "move", "-R", "app", "main", "-r", main, "--allow-backwards"
    )
    assert code == 0
    code, out = await cli(mesa, capsys, "show", "-R", "app", "nope")
    assert code == 1
    assert "no bookmark or change 'nope'" in out
    code, out = await cli(mesa, capsys, "bookmark", "delete", "-R", "app", "main")
    assert code == 1

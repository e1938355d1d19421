"""A core no input can break (issue 13, items 1-2), through the SDK on the memory transport.

- A tree 2,500 directories deep (Python's recursion limit is 1,000 frames) is made,
  removed with ``rm -r`` while another mount of the change is live, and every mount,
  fresh mount and versioning call (``changes.current``, ``mesa.changes.get``,
  ``checkpoint``, ``changes.new``) keeps working, before and after the removal.
- A mount whose fold fails at an entry (here: injected) fails every pending and later
  call with `FoldError`, naming the change and the sequence, within a bounded time;
  nothing hangs (a subscriber waiting for the mount to catch up gets the error too).
  An unexpected failure anywhere in the mount's pump breaks the mount the same way,
  rather than killing the pump silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from engine import fold as fold_module
from engine.replica import Folded
from mesa._mount import RepoMount
from mesa_sdk import FoldError, Mesa, MesaFileSystem, RepoConfig, WatchEvent
from transports.base import ManualClock

P = "/acme/app"
DEPTH = 2_500
#: How long any call may take to fail instead of hanging.
BOUNDED_S = 5


def repo_of(fs: MesaFileSystem) -> RepoMount:
    return fs.repo_mounts[0]


async def test_a_2500_deep_tree_removed_under_a_live_mount(mesa: Mesa, clock: ManualClock) -> None:
    deep = P + "/top" + "/d" * (DEPTH - 1)
    following = [RepoConfig("app", bookmark="main")]
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=following) as b:
        await a.mkdir(deep, recursive=True)
        await a.write(deep + "/f", b"bottom\n")
        await b.wait_synced()
        assert await b.read(deep + "/f") == b"bottom\n"

        # Every versioning call on a change whose tree is that deep.
        info = await a.changes.current("app")
        got = await mesa.changes.get("app", info.change_id)
        assert (got.change_id, got.commit_oid) == (info.change_id, info.commit_oid)
        clock.advance(1000)
        checkpoint = await a.changes.checkpoint("app", "deep")
        assert checkpoint.saved_change_oid == info.commit_oid
        assert await a.read(deep + "/f") == b"bottom\n"  # the new change starts there
        async with mesa.fs.mount(repos=["app"]) as fresh:
            assert await fresh.read(deep + "/f") == b"bottom\n"
            clock.advance(1000)
            child = await fresh.changes.new("app", bookmark="main", message="from deep")
            assert (await fresh.changes.current("app")).change_id == child
            assert await fresh.read(deep + "/f") == b"bottom\n"

        # rm -r of the top while b (following main onto the checkpoint) is live.
        switched = asyncio.Event()
        repo_of(b).add_switch_listener(lambda _: switched.set())
        async with asyncio.timeout(BOUNDED_S):
            while repo_of(b).change_id != repo_of(a).change_id:
                switched.clear()
                await switched.wait()
        await a.rm(P + "/top", recursive=True)
        await a.write(P + "/after", b"after\n")  # the next write does not hang
        await b.wait_synced()
        assert await b.readdir(P) == ["after"]
        assert await a.readdir(P) == ["after"]
        change = repo_of(a).change_id

    # A fresh mount folds the whole log (mkdir, rm -r) again; so do the versioning calls.
    async with mesa.fs.mount(repos=["app"]) as again:
        assert await again.readdir(P) == ["after"]
        info = await again.changes.current("app")
        assert info.change_id == change
        got = await mesa.changes.get("app", change)
        assert got.commit_oid == info.commit_oid
        clock.advance(1000)
        checkpoint = await again.changes.checkpoint("app", "after the rm")
        assert checkpoint.saved_change_id == change
        clock.advance(1000)
        await again.changes.new("app", bookmark="main")
        assert await again.readdir(P) == ["after"]


async def test_a_deep_tree_copied_to_another_repo(mesa: Mesa) -> None:
    """A copy across repos is one op per node: 1,100 levels deep, beyond the recursion limit."""
    await mesa.repos.create("lib")
    levels = "/d" * 1_099
    async with asyncio.timeout(20), mesa.fs.mount(repos=["app", "lib"]) as fs:
        await fs.mkdir(P + "/top" + levels, recursive=True)
        await fs.write(P + "/top" + levels + "/f", b"bottom\n")
        await fs.symlink("f", P + "/top" + levels + "/l")
        await fs.cp(P + "/top", "/acme/lib/copy", recursive=True)
        assert await fs.read("/acme/lib/copy" + levels + "/f") == b"bottom\n"
        assert await fs.read("/acme/lib/copy" + levels + "/l") == b"bottom\n"


# -- a fold that fails ----------------------------------------------------------------------


@pytest.fixture
def boom() -> Iterator[None]:
    """Make the fold of any op on ``boom`` raise after applying it (every mount)."""
    original = fold_module._Folder.apply

    def apply(self: fold_module._Folder) -> None:
        original(self)
        if getattr(self.entry.op, "path", None) == ("boom",):
            raise RuntimeError("injected failure")

    fold_module._Folder.apply = apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        fold_module._Folder.apply = original  # type: ignore[method-assign]


def assert_names(exc: BaseException, change: str, seq: int) -> None:
    assert isinstance(exc, FoldError), repr(exc)
    assert (exc.change, exc.seq) == (change, seq)
    assert change in str(exc)
    assert f"sequence {seq}" in str(exc)
    assert "injected failure" in str(exc)


@pytest.mark.usefixtures("boom")
async def test_a_fold_that_fails_fails_every_call_naming_change_and_sequence(
    mesa: Mesa,
) -> None:
    async with asyncio.timeout(4 * BOUNDED_S):
        async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
            change = repo_of(a).change_id
            await a.write(P + "/before", b"before\n")
            await b.wait_synced()

            # A subscriber of b that waits for b to catch up each time it hears of a change.
            go = asyncio.Event()
            caught: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

            async def catch_up(event: WatchEvent) -> None:
                await go.wait()
                try:
                    await b.wait_synced()
                except Exception as exc:
                    if not caught.done():
                        caught.set_result(exc)
                else:
                    if not caught.done():
                        caught.set_result(None)

            subscription = b.subscribe(catch_up)
            await a.write(P + "/heard", b"x")  # b's subscriber hears of it, then waits

            # The entry at sequence 3 cannot be folded: the write of it and the writes
            # queued behind it fail, naming the change and the sequence.
            results = await asyncio.wait_for(
                asyncio.gather(
                    a.write(P + "/boom", b"boom\n"),
                    a.write(P + "/later-1", b"1"),
                    a.write(P + "/later-2", b"2"),
                    a.wait_synced(),
                    return_exceptions=True,
                ),
                BOUNDED_S,
            )
            for result in results:
                assert isinstance(result, BaseException), result
                assert_names(result, change, 3)
            go.set()
            assert_names(await asyncio.wait_for(caught, BOUNDED_S), change, 3)

            # Every later call raises it too, on both mounts; the state stays as it was.
            for call in (
                a.write(P + "/new", b"x"),
                a.read(P + "/before"),
                a.wait_synced(),
                b.wait_synced(),
                b.read(P + "/before"),
            ):
                with pytest.raises(FoldError) as later:
                    await asyncio.wait_for(call, BOUNDED_S)
                assert_names(later.value, change, 3)
            for fs in (a, b):
                assert repo_of(fs).replica.seq == 2
                assert repo_of(fs).replica.state.tree.lookup(("boom",)) is None
            await asyncio.wait_for(subscription.unsubscribe(), BOUNDED_S)

        # A fresh mount stops at the same entry with the same error as a live one.
        with pytest.raises(FoldError) as fresh:
            async with mesa.fs.mount(repos=["app"]):
                pass
        assert_names(fresh.value, change, 3)
        # So does reading the change without a mount (a fold of its tail).
        with pytest.raises(FoldError) as unmounted:
            await mesa.changes.get("app", change)
        assert_names(unmounted.value, change, 3)


async def test_an_unexpected_failure_in_the_pump_breaks_the_mount(mesa: Mesa) -> None:
    async with asyncio.timeout(4 * BOUNDED_S):
        async with mesa.fs.mount(repos=["app"]) as fs:
            repo = repo_of(fs)
            change = repo.change_id

            def listener(_: RepoMount, folded: list[Folded]) -> None:
                raise ValueError("a listener failed")

            repo.add_fold_listener(listener)
            await fs.write(P + "/f", b"x")  # folded (and returned) before the listener ran
            with pytest.raises(FoldError) as caught:
                await asyncio.wait_for(fs.write(P + "/g", b"y"), BOUNDED_S)
            assert (caught.value.change, caught.value.seq) == (change, 1)
            assert "ValueError: a listener failed" in str(caught.value)
            with pytest.raises(FoldError):
                await asyncio.wait_for(fs.wait_synced(), BOUNDED_S)

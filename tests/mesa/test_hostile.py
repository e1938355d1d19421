"""Hostile arguments: only documented errors, and a call that raises changes nothing.

Issue 13, items 4 and 5: every public `MesaFileSystem` method (and the ``fs.changes``
and ``fs.bookmarks`` namespaces) gets wrong types, odd values and path shapes Linux
refuses. The documented errors are `TypeError` for a path or content of the wrong type,
`ValueError` (`InvalidOptionsError` is one) for values, `OSError` with the errno Linux
gives for paths, and `NotImplementedError` for ``link``. Nothing else may escape, and a
call that raises leaves the log, the KV records and the tree as they were.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesa_sdk import InvalidOptionsError, Mesa, MesaFileSystem
from tests.mesa.conftest import ORG
from transports.memory import MemoryTransport

P = f"/{ORG}/app"
DOCUMENTED = (OSError, TypeError, ValueError, NotImplementedError)


async def fingerprint(mesa: Mesa, fs: MesaFileSystem, transport: MemoryTransport) -> Any:
    """What a refused call must not change: the log, every KV record, the tree."""
    change = fs.repo_mounts[0].change_id
    token = mesa.management_token()
    keys = await transport.kv_keys(token, f"{ORG}.")
    records = [(k, (await transport.kv_get(token, k))) for k in keys]
    values = [(k, None if e is None else (e.value, e.revision)) for k, e in records]
    state = fs.repo_mounts[0].replica.state
    return len(transport.log_entries(ORG, "app", change)), values, state.tree.hash()


async def seeded(fs: MesaFileSystem) -> None:
    await fs.mkdir(f"{P}/d")
    await fs.write(f"{P}/f1", b"one\n")
    await fs.write(f"{P}/d/g", b"gee\n")


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda fs: fs.mkdir(None, recursive=True), TypeError, "path"),
        (lambda fs: fs.mkdir(b"/acme/app/x", recursive=True), TypeError, "path"),
        (lambda fs: fs.write(f"{P}/\ud800", b"x"), InvalidOptionsError, "path"),
        (lambda fs: fs.write(f"{P}/nul\x00", b"x"), InvalidOptionsError, "NUL"),
        (lambda fs: fs.write(f"{P}/s", "\ud800"), InvalidOptionsError, "content"),
        (lambda fs: fs.write(f"{P}/s", 12), TypeError, "content"),
        (lambda fs: fs.utimes(f"{P}/f1", 0, float("inf")), InvalidOptionsError, "mtime_ms"),
        (lambda fs: fs.utimes(f"{P}/f1", 0, 2**63), InvalidOptionsError, "mtime_ms"),
        (lambda fs: fs.utimes(f"{P}/f1", -(2**63), 0), InvalidOptionsError, "atime_ms"),
        (lambda fs: fs.chmod(f"{P}/f1", "755"), InvalidOptionsError, "mode"),
        (lambda fs: fs.symlink(None, f"{P}/l"), TypeError, "target"),
        (lambda fs: fs.mv(f"{P}/f1", 7), TypeError, "path"),
    ],
)
async def test_bad_arguments_raise_the_documented_error_naming_the_argument(
    mesa: Mesa, transport: MemoryTransport, call: Any, error: type, words: str
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await seeded(fs)
        before = await fingerprint(mesa, fs, transport)
        with pytest.raises(error, match=words):
            await call(fs)
        assert await fingerprint(mesa, fs, transport) == before


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda fs: fs.read(f"{P}/f1/"), errno.ENOTDIR),
        (lambda fs: fs.stat(f"{P}/f1/"), errno.ENOTDIR),
        (lambda fs: fs.rm(f"{P}/f1/"), errno.ENOTDIR),
        (lambda fs: fs.cp(f"{P}/f1/", f"{P}/x"), errno.ENOTDIR),
        (lambda fs: fs.cp(f"{P}/f1", f"{P}/x/"), errno.ENOTDIR),
        (lambda fs: fs.mv(f"{P}/f1/", f"{P}/x"), errno.ENOTDIR),
        (lambda fs: fs.mv(f"{P}/f1", f"{P}/x/"), errno.ENOTDIR),
        (lambda fs: fs.chmod(f"{P}/f1/", 0o600), errno.ENOTDIR),
        (lambda fs: fs.utimes(f"{P}/f1/", 1, 1), errno.ENOTDIR),
        (lambda fs: fs.write(f"{P}/newdir/", b"x"), errno.EISDIR),
        (lambda fs: fs.write(f"{P}/f1/", b"x"), errno.EISDIR),
        (lambda fs: fs.append(f"{P}/d/.", b"x"), errno.EISDIR),
        (lambda fs: fs.write("acme/app/rel", b"x"), errno.ENOENT),
        (lambda fs: fs.mkdir("acme/app/rel", recursive=True), errno.ENOENT),
        (lambda fs: fs.read(""), errno.ENOENT),
        (lambda fs: fs.mv(f"{P}/d/.", f"{P}/e"), errno.EBUSY),
        (lambda fs: fs.mv(f"{P}/f1", f"{P}/d/."), errno.EBUSY),
        (lambda fs: fs.rm(f"{P}/d/.", recursive=True, force=True), errno.EINVAL),
        (lambda fs: fs.rm(f"{P}/d/..", recursive=True), errno.EINVAL),
        (lambda fs: fs.symlink("f1", f"{P}/s/"), errno.ENOENT),
    ],
)
async def test_paths_linux_refuses_are_refused_with_its_errno(
    mesa: Mesa, transport: MemoryTransport, call: Any, code: int
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await seeded(fs)
        before = await fingerprint(mesa, fs, transport)
        with pytest.raises(OSError, match=r".") as info:
            await call(fs)
        assert info.value.errno == code, info.value
        assert await fingerprint(mesa, fs, transport) == before


async def test_a_relative_path_says_paths_are_absolute(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        with pytest.raises(FileNotFoundError, match=r"/<org>/<repo>/") as info:
            await fs.write("acme/app/rel", b"x")
        assert "not an absolute path" in str(info.value)
        assert "(mounted here: /acme/app)" in str(info.value)


@pytest.mark.parametrize(
    ("call", "why"),
    [
        (lambda fs: fs.write("/acme/nope/f", b"x"), "repo acme/nope is not mounted here"),
        (lambda fs: fs.read("/other/app/f1"), "org 'other' is not mounted here"),
        (lambda fs: fs.mkdir("/other/app/d", recursive=True), "org 'other' is not mounted here"),
        (lambda fs: fs.mkdir("/acme/nope/d"), "repo acme/nope is not mounted here"),
        (lambda fs: fs.stat("/acme/nope"), "repo acme/nope is not mounted here"),
        (lambda fs: fs.readdir("/other"), "org 'other' is not mounted here"),
        (lambda fs: fs.rm("/acme/nope/f"), "repo acme/nope is not mounted here"),
        (lambda fs: fs.mv(f"{P}/f1", "/acme/nope/f1"), "repo acme/nope is not mounted here"),
        (lambda fs: fs.read("/acme/nope/f", at=1), "repo acme/nope is not mounted here"),
        (lambda fs: fs.read("/acme", at=1), "not inside a mounted repo"),
        (lambda fs: fs.read("acme/app/f1", at=1), "not an absolute path"),
        (lambda fs: fs.changes.current("other/app"), "org 'other' is not mounted here"),
        (lambda fs: fs.bookmarks.list("nope"), "repo acme/nope is not mounted here"),
    ],
)
async def test_a_path_outside_the_mounted_repos_names_them(
    mesa: Mesa, transport: MemoryTransport, call: Any, why: str
) -> None:
    await mesa.repos.create("docs")
    async with mesa.fs.mount(repos=["app", "docs"]) as fs:
        await seeded(fs)
        before = await fingerprint(mesa, fs, transport)
        with pytest.raises(FileNotFoundError) as info:
            await call(fs)
        assert info.value.errno == errno.ENOENT
        message = str(info.value)
        assert why in message
        assert "mount paths are /<org>/<repo>/... (mounted here: /acme/app, /acme/docs)" in message
        assert await fingerprint(mesa, fs, transport) == before


async def test_directory_forms_of_directories_still_work(mesa: Mesa) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await seeded(fs)
        assert await fs.readdir(f"{P}/d/") == ["g"]
        assert (await fs.stat(f"{P}/d/.")).is_directory
        await fs.mkdir(f"{P}/e/")
        await fs.mv(f"{P}/e/", f"{P}/e2")
        await fs.rm(f"{P}/e2/")
        assert await fs.readdir(P) == ["d", "f1"]


# -- the fuzz test ---------------------------------------------------------------------

_names = st.sampled_from(["f1", "d", "g", "new", ".", "..", "", "d/g", "\ud800", "x\x00"])
_paths = st.one_of(
    st.builds(
        lambda parts, tail: P + "/" + "/".join(parts) + tail,
        st.lists(_names, max_size=3),
        st.sampled_from(["", "", "/", "/.", "/.."]),
    ),
    st.sampled_from(["", "/", "/acme", "acme/app/f1", "/other/app/f1", "//acme//app//f1"]),
    st.none(),
    st.integers(),
    st.binary(max_size=4),
    st.text(max_size=6),
)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.sampled_from(["\ud800", 0o644, 0o7777, 1_700_000_000_000]),
)
_calls = st.one_of(
    st.tuples(st.just("read"), _paths),
    st.tuples(st.just("stat"), _paths),
    st.tuples(st.just("lstat"), _paths),
    st.tuples(st.just("readdir"), _paths),
    st.tuples(st.just("readlink"), _paths),
    st.tuples(st.just("realpath"), _paths),
    st.tuples(st.just("exists"), _paths),
    st.tuples(st.just("write"), _paths, _values),
    st.tuples(st.just("append"), _paths, _values),
    st.tuples(st.just("mkdir"), _paths, _values),
    st.tuples(st.just("rm"), _paths, _values, _values),
    st.tuples(st.just("cp"), _paths, _paths, _values),
    st.tuples(st.just("mv"), _paths, _paths),
    st.tuples(st.just("chmod"), _paths, _values),
    st.tuples(st.just("symlink"), _values, _paths),
    st.tuples(st.just("utimes"), _paths, _values, _values),
    st.tuples(st.just("link"), _paths, _paths),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(_calls, min_size=1, max_size=6))
async def test_hostile_calls_raise_only_documented_errors_and_change_nothing(
    mesa: Mesa, transport: MemoryTransport, calls: list[tuple[Any, ...]]
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        for name, *args in calls:
            before = await fingerprint(mesa, fs, transport)
            try:
                await getattr(fs, name)(*args)
            except DOCUMENTED:
                after = await fingerprint(mesa, fs, transport)
                assert after == before, f"{name}{tuple(args)!r} raised and changed state"
            except Exception as exc:
                pytest.fail(f"{name}{tuple(args)!r} raised {type(exc).__name__}: {exc}")

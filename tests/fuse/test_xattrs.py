"""Per-file metadata as extended attributes on a real FUSE mount (``user.mesa.*``).

Uses the real ``setfattr``/``getfattr`` (package ``attr``), ``cp -a`` and ``ls -l``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.metadata import MAX_VALUE_BYTES
from tests.fuse.conftest import StartFuse
from tests.fuse.fuseutil import FuseMount, wait_until
from tests.integration.conftest import Deployment, SpawnMount
from tests.integration.natsutil import NatsServer

EVENT_TIMEOUT_S = 20.0


def tool(*argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed (apt-get install attr): see the README")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if ok:
        assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result


def getfattr_dump(path: Path) -> dict[str, str]:
    """``getfattr -d`` of ``path`` (every ``user.`` attribute) as a dict."""
    out = tool("getfattr", "--absolute-names", "-d", str(path)).stdout
    attrs: dict[str, str] = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            attrs[name] = value.strip('"')
    return attrs


def raises_errno(code: int, fn: object, *args: object) -> None:
    with pytest.raises(OSError) as info:  # noqa: PT011 (the errno is the assertion)
        fn(*args)  # type: ignore[operator]
    assert info.value.errno == code, info.value


def test_setfattr_getfattr_round_trip(shared_mount: FuseMount) -> None:
    work = shared_mount.repo / "xattr-round-trip"
    work.mkdir()
    f = work / "task.md"
    f.write_bytes(b"do it\n")
    assert getfattr_dump(f) == {}
    tool("setfattr", "-n", "user.mesa.status", "-v", "done", str(f))
    tool("setfattr", "-n", "user.mesa.owner", "-v", "agent-7", str(f))
    assert getfattr_dump(f) == {"user.mesa.owner": "agent-7", "user.mesa.status": "done"}
    only = tool("getfattr", "--only-values", "-n", "user.mesa.status", str(f)).stdout
    assert only == "done"
    assert sorted(os.listxattr(f)) == ["user.mesa.owner", "user.mesa.status"]
    assert os.getxattr(f, "user.mesa.owner") == b"agent-7"
    # Removing one attribute keeps the other; a missing one is ENODATA.
    tool("setfattr", "-x", "user.mesa.owner", str(f))
    assert getfattr_dump(f) == {"user.mesa.status": "done"}
    missing = tool("getfattr", "-n", "user.mesa.owner", str(f), ok=False)
    assert missing.returncode != 0
    assert "No such attribute" in missing.stderr
    raises_errno(errno.ENODATA, os.getxattr, f, "user.mesa.owner")
    raises_errno(errno.ENODATA, os.removexattr, f, "user.mesa.owner")
    # Directories carry metadata too.
    tool("setfattr", "-n", "user.mesa.kind", "-v", "workspace", str(work))
    assert getfattr_dump(work) == {"user.mesa.kind": "workspace"}
    # The bytes are untouched; an empty value deletes the key.
    assert f.read_bytes() == b"do it\n"
    os.setxattr(f, "user.mesa.status", b"")
    assert os.listxattr(f) == []


def test_other_namespaces_and_invalid_values(shared_mount: FuseMount) -> None:
    f = shared_mount.repo / "xattr-errors"
    f.write_bytes(b"x")
    for name in ("user.other", "trusted.x", "security.selinux", "system.posix_acl_access"):
        raises_errno(errno.EOPNOTSUPP, os.getxattr, f, name)
    for name in ("user.other", "user.mesa"):
        raises_errno(errno.EOPNOTSUPP, os.setxattr, f, name, b"v")
        raises_errno(errno.EOPNOTSUPP, os.removexattr, f, name)
    failed = tool("setfattr", "-n", "user.other", "-v", "x", str(f), ok=False)
    assert "Operation not supported" in failed.stderr
    raises_errno(errno.EINVAL, os.setxattr, f, "user.mesa.org", b"v")  # reserved
    raises_errno(errno.EINVAL, os.setxattr, f, "user.mesa.a b", b"v")
    raises_errno(errno.EINVAL, os.setxattr, f, "user.mesa.k", b"\xff\xfe")
    raises_errno(errno.E2BIG, os.setxattr, f, "user.mesa.k", b"v" * (MAX_VALUE_BYTES + 1))
    os.setxattr(f, "user.mesa.k", b"v" * MAX_VALUE_BYTES)
    assert os.getxattr(f, "user.mesa.k") == b"v" * MAX_VALUE_BYTES
    # Read-only repos refuse, as for any write.
    docs = shared_mount.mountpoint / "acme" / "docs"
    raises_errno(errno.EROFS, os.setxattr, docs, "user.mesa.k", b"v")


def test_cp_a_and_ls_keep_working_and_carry_metadata(
    shared_mount: FuseMount, tmp_path: Path
) -> None:
    work = shared_mount.repo / "xattr-tools"
    work.mkdir()
    src = work / "src.txt"
    src.write_bytes(b"payload\n")
    os.setxattr(src, "user.mesa.status", b"done")
    # Inside the mount: cp -a copies the metadata (and mv carries it).
    tool("cp", "-a", str(src), str(work / "copy.txt"))
    assert getfattr_dump(work / "copy.txt") == {"user.mesa.status": "done"}
    os.rename(work / "copy.txt", work / "moved.txt")
    assert getfattr_dump(work / "moved.txt") == {"user.mesa.status": "done"}
    # Out of the mount and back in: cp -a succeeds whatever the other side supports.
    out = tmp_path / "out"
    tool("cp", "-a", str(work), str(out))
    assert (out / "src.txt").read_bytes() == b"payload\n"
    local = tmp_path / "local.txt"
    local.write_bytes(b"local\n")
    tool("cp", "-a", str(local), str(work / "local.txt"))
    assert (work / "local.txt").read_bytes() == b"local\n"
    listing = tool("ls", "-la", str(work)).stdout
    assert "src.txt" in listing
    assert "local.txt" in listing


async def test_metadata_is_realtime_between_the_sdk_and_fuse(
    nats_server: NatsServer, spawn_mount: SpawnMount, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    app = await spawn_mount("app", deployment, create=True)
    await app.write("shared.md", b"notes\n")
    fuse = await asyncio.to_thread(start_fuse, deployment)
    path = fuse.repo / "shared.md"
    assert os.listxattr(path) == []

    # SDK -> FUSE: the next getxattr sees it (the kernel does not cache attributes).
    await app.call("set_metadata", path="shared.md", metadata={"status": "review"})

    def has(name: str, value: bytes | None) -> bool:
        try:
            return os.getxattr(path, name) == value
        except OSError as exc:
            return exc.errno == errno.ENODATA and value is None

    await asyncio.to_thread(
        wait_until, lambda: has("user.mesa.status", b"review"), EVENT_TIMEOUT_S, "status"
    )
    assert getfattr_dump(path) == {"user.mesa.status": "review"}

    # FUSE -> SDK: setfattr and removexattr are durable when they return.
    await asyncio.to_thread(tool, "setfattr", "-n", "user.mesa.owner", "-v", "human", str(path))
    await asyncio.to_thread(tool, "setfattr", "-x", "user.mesa.status", str(path))

    async def sdk_metadata() -> dict[str, str]:
        await app.call("sync")
        reply = await app.call("get_metadata", path="shared.md")
        metadata: dict[str, str] = reply["metadata"]
        return metadata

    deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT_S
    while (got := await sdk_metadata()) != {"org": "acme", "repo": "app", "owner": "human"}:
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)
    # And back: the SDK's delete reaches FUSE.
    await app.call("set_metadata", path="shared.md", metadata={"owner": None})
    await asyncio.to_thread(
        wait_until, lambda: has("user.mesa.owner", None), EVENT_TIMEOUT_S, "owner deleted"
    )

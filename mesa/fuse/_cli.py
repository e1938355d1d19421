"""``mesa mount`` and ``mesa unmount``.

``mesa mount MOUNTPOINT --org ORG --repo NAME[@bookmark|@change_id] [--repo ...]
[--read-only NAME] [--ttl S] [--daemonize]`` mounts the repos at
``MOUNTPOINT/<org>/<repo>`` and serves them until unmounted (``mesa unmount``,
``fusermount3 -u``, SIGINT, SIGTERM). The filesystem runs pyfuse3 in asyncio mode on
the same event loop as the mount's NATS connection. In the foreground it prints one
line once the mount is usable; with ``--daemonize`` it forks first, and the parent
exits 0 once the child's mount is usable (non-zero with the child's error if it
failed), leaving the child serving in its own session.

The mount's token lives ``--ttl`` seconds (default 3600, at most 86400) and is not
refreshed: after that every request fails with ``EACCES``.

pyfuse3 is imported only when mounting, so this module (and ``mesa unmount``) work
without libfuse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.ids import is_change_id
from mesa._types import RepoConfig
from mesa.errors import MesaError

log = logging.getLogger("mesa.fuse")

READY_TIMEOUT_S = 120.0
FUSE_MISSING = "pyfuse3 is not installed: pip install 'mesafs[fuse]' (needs libfuse3)"


@dataclass
class MountOptions:
    """What ``mesa mount`` was asked to do."""

    mountpoint: str
    org: str
    repos: list[RepoConfig]
    ttl: int | None = None
    daemonize: bool = False
    allow_other: bool = False
    cache_timeout_s: float = 3600.0
    log_file: str | None = None
    debug: bool = False


def _say(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def add_commands(commands: Any) -> None:
    """Register ``mount`` and ``unmount`` on the CLI's subparsers."""
    mount = commands.add_parser(
        "mount", help="mount repos as a directory (FUSE): MOUNTPOINT/<org>/<repo>/..."
    )
    mount.add_argument("mountpoint")
    mount.add_argument("--org", default=os.environ.get("MESA_ORG"), help="default: $MESA_ORG")
    mount.add_argument(
        "--repo",
        action="append",
        required=True,
        metavar="NAME[@BOOKMARK|@CHANGE_ID]",
        help="a repo to mount (repeatable); default: its default bookmark",
    )
    mount.add_argument(
        "--read-only", action="append", default=[], metavar="NAME", help="mount NAME read-only"
    )
    mount.add_argument("--ttl", type=int, help="token lifetime in seconds (default 3600)")
    mount.add_argument("--daemonize", action="store_true", help="serve in the background")
    mount.add_argument(
        "--allow-other", action="store_true", help="let other users access the mount"
    )
    mount.add_argument(
        "--cache-timeout",
        type=float,
        default=3600.0,
        help="kernel entry/attribute cache timeout in seconds (changes invalidate it)",
    )
    mount.add_argument("--log-file", help="log here (a daemon logs nowhere otherwise)")
    mount.add_argument("--debug", action="store_true", help="debug logging")
    unmount = commands.add_parser("unmount", help="unmount a `mesa mount` (also a dead one)")
    unmount.add_argument("mountpoint")
    unmount.add_argument("--lazy", action="store_true", help="detach now even if busy (umount -l)")


def run(args: argparse.Namespace) -> int:
    """Run ``mount`` or ``unmount``; return the exit code."""
    if args.command == "unmount":
        return unmount(args.mountpoint, lazy=args.lazy)
    try:
        options = MountOptions(
            mountpoint=os.path.abspath(args.mountpoint),
            org=args.org or "",
            repos=parse_repos(args.repo, args.read_only),
            ttl=args.ttl,
            daemonize=args.daemonize,
            allow_other=args.allow_other,
            cache_timeout_s=args.cache_timeout,
            log_file=args.log_file,
            debug=args.debug,
        )
    except ValueError as exc:
        _say(f"mesa mount: {exc}", err=True)
        return 2
    return mount(options)


def parse_repos(specs: list[str], read_only: list[str]) -> list[RepoConfig]:
    """Parse ``NAME[@bookmark|@change_id]`` specs; ``read_only`` names must be among them."""
    configs: list[RepoConfig] = []
    names = set()
    for spec in specs:
        name, _, ref = spec.partition("@")
        if not name:
            raise ValueError(f"invalid --repo {spec!r}")
        names.add(name)
        ro = name in read_only
        if not ref:
            configs.append(RepoConfig(name, read_only=ro))
        elif is_change_id(ref):
            configs.append(RepoConfig(name, change_id=ref, read_only=ro))
        else:
            configs.append(RepoConfig(name, bookmark=ref, read_only=ro))
    unknown = sorted(set(read_only) - names)
    if unknown:
        raise ValueError(f"--read-only names repos that are not mounted: {', '.join(unknown)}")
    return configs


def mount(options: MountOptions) -> int:
    """Mount and serve (see module docstring); return the exit code."""
    if not options.org:
        _say("mesa mount: --org is required (or set MESA_ORG)", err=True)
        return 2
    if not os.path.isdir(options.mountpoint):
        _say(f"mesa mount: {options.mountpoint} is not a directory", err=True)
        return 2
    if os.path.ismount(options.mountpoint):
        _say(f"mesa mount: {options.mountpoint} is already a mount point", err=True)
        return 2
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        _say(f"mesa mount: {FUSE_MISSING}", err=True)
        return 2
    if options.daemonize:
        return _daemonize(options)
    _logging(options, foreground=True)

    def ready(message: str) -> None:
        _say(message)

    return _serve_sync(options, ready)


def _serve_sync(options: MountOptions, ready: Callable[[str], None]) -> int:
    try:
        return asyncio.run(serve(options, ready))
    except (MesaError, OSError, RuntimeError) as exc:
        _say(f"mesa mount: {exc}", err=True)
        return 1


async def serve(options: MountOptions, ready: Callable[[str], None]) -> int:
    """Mount, call ``ready`` once usable, serve until unmounted; return the exit code."""
    import pyfuse3
    import pyfuse3.asyncio

    from mesa._client import Mesa
    from mesa.fuse._ops import operations

    pyfuse3.asyncio.enable()
    fuse: Any = pyfuse3
    client = Mesa(org=options.org)
    async with client.fs.mount(repos=options.repos, ttl=options.ttl) as fs:
        ops = operations(fs, cache_timeout_s=options.cache_timeout_s)
        fuse.init(ops, options.mountpoint, _fuse_options(options))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, fuse.terminate)
        ops.notifier.start()
        names = ", ".join(f"{options.org}/{c.name}" for c in options.repos)
        ready(f"mounted {names} at {options.mountpoint} (pid {os.getpid()})")
        try:
            await fuse.main()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            # Write-behind: what was closed but not appended yet goes to the log now.
            await ops.shutdown(SHUTDOWN_DRAIN_S)
            ops.notifier.stop()
            with contextlib.suppress(Exception):
                fuse.close(unmount=True)
    return 0


#: How long an unmount waits for the log writer to drain its queue.
SHUTDOWN_DRAIN_S = 120.0


def _fuse_options(options: MountOptions) -> set[str]:
    names = "+".join(c.name for c in options.repos)
    # noatime: reads never update access times here (times change only by utimens).
    opts = {f"fsname=mesa:{options.org}/{names}", "subtype=mesafs", "default_permissions"}
    opts.add("noatime")
    if options.allow_other:
        opts.add("allow_other")
    return opts


def _logging(options: MountOptions, *, foreground: bool) -> None:
    level = logging.DEBUG if options.debug else logging.WARNING
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if options.log_file:
        logging.basicConfig(filename=options.log_file, level=level, format=fmt)
    elif foreground:
        logging.basicConfig(stream=sys.stderr, level=level, format=fmt)


def _daemonize(options: MountOptions) -> int:
    """Fork; the child serves in its own session, the parent waits until it is mounted."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message.startswith("ok "):
            _say(message[3:])
            return 0
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        _say(f"mesa mount: {message or 'the mount process exited'}", err=True)
        return 1
    os.close(read_fd)
    os.setsid()
    _detach_stdio()
    _logging(options, foreground=False)
    reported = False

    def ready(message: str) -> None:
        nonlocal reported
        os.write(write_fd, f"ok {message}".encode())
        os.close(write_fd)
        reported = True

    code = 1
    try:
        code = asyncio.run(serve(options, ready))
    except BaseException as exc:  # the parent must hear why
        log.exception("mount failed")
        if not reported:
            os.write(write_fd, str(exc).encode() or type(exc).__name__.encode())
    finally:
        if not reported:
            os.close(write_fd)
        os._exit(code)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def unmount(mountpoint: str, *, lazy: bool = False) -> int:
    """Unmount a FUSE mount, alive or left behind by a dead process; return the exit code."""
    target = os.path.abspath(mountpoint)
    attempts: list[list[str]] = []
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if fusermount:
        attempts.append([fusermount, "-u", *(["-z"] if lazy else []), target])
    if os.geteuid() == 0 and shutil.which("umount"):
        attempts.append(["umount", *(["-l"] if lazy else []), target])
    errors: list[str] = []
    for argv in attempts:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            _say(f"unmounted {target}")
            return 0
        errors.append(result.stderr.strip() or f"{argv[0]} exited {result.returncode}")
    if not attempts:
        errors.append("neither fusermount3 nor umount is available")
    _say(f"mesa unmount: {target}: {'; '.join(errors)}", err=True)
    return 1

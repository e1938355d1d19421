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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.ids import is_change_id
from mesa._cli_out import exit_code, start_progress
from mesa._types import RepoConfig
from mesa.errors import MesaError, NotFoundError
from mesa.fuse import _registry as registry
from mesa.fuse._registry import MountedRepo, MountRecord

if TYPE_CHECKING:
    from mesa._mount import RepoMount

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
    unmount_timeout_s: float = 120.0
    spool_dir: str | None = None
    nonempty: bool = False


def _say(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def add_commands(commands: Any) -> None:
    """Register ``mount`` and ``unmount`` on the CLI's subparsers."""
    text = "mount repos as a directory (FUSE): MOUNTPOINT/<org>/<repo>/..."
    mount = commands.add_parser("mount", help=text, description=text)
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
    mount.add_argument(
        "--log-file", help="log here (default: stderr; a daemon: $MESA_HOME/logs/mount-*.log)"
    )
    mount.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="where open files past 1 MiB keep their bytes (sparse, unnamed temporary "
        "files; default: the system's temporary directory)",
    )
    mount.add_argument(
        "--unmount-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="how long an unmount waits for queued writes to reach the log (default 120)",
    )
    mount.add_argument(
        "--nonempty",
        action="store_true",
        help="mount over a directory that is not empty (its files are hidden meanwhile)",
    )
    mount.add_argument("--debug", action="store_true", help="debug logging")
    text = "unmount a `mesa mount` (also a dead one)"
    unmount = commands.add_parser("unmount", help=text, description=text)
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
            unmount_timeout_s=args.unmount_timeout,
            spool_dir=args.spool_dir,
            nonempty=args.nonempty,
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
    if not options.nonempty and os.listdir(options.mountpoint):
        _say(
            f"mesa mount: {options.mountpoint} is not empty (its files would be hidden); "
            "pass --nonempty to mount over it",
            err=True,
        )
        return 2
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        _say(f"mesa mount: {FUSE_MISSING}", err=True)
        return 2
    if any(_maybe_prefix(c) for c in options.repos):
        try:
            options.repos = asyncio.run(_resolve_prefixes(options.org, options.repos))
        except MesaError as exc:
            _say(f"mesa mount: error: {exc}", err=True)
            return exit_code(exc)
    if options.daemonize:
        return _daemonize(options)
    _logging(options, foreground=True)
    stop = start_progress(f"mounting {_names(options)} (folding the log)")

    def ready(message: str) -> None:
        stop()
        _say(message)

    try:
        return _serve_sync(options, ready)
    finally:
        stop()


def _names(options: MountOptions) -> str:
    return ", ".join(f"{options.org}/{c.name}" for c in options.repos)


def _maybe_prefix(config: RepoConfig) -> bool:
    """Whether ``NAME@REF`` may name a change by a prefix of its id."""
    return bool(config.bookmark) and set(config.bookmark or "") <= set("klmnopqrstuvwxyz")


async def _resolve_prefixes(org: str, configs: list[RepoConfig]) -> list[RepoConfig]:
    """Replace ``NAME@PREFIX`` (no bookmark of that name) by the change it names."""
    from mesa._cli_vcs import resolve
    from mesa._client import Mesa

    client = Mesa(org=org)
    out: list[RepoConfig] = []
    try:
        for config in configs:
            if _maybe_prefix(config) and config.bookmark is not None:
                try:
                    await client.bookmarks.get(config.name, config.bookmark)
                except NotFoundError:
                    change = await resolve(client, config.name, config.bookmark)
                    config = RepoConfig(config.name, change_id=change, read_only=config.read_only)
            out.append(config)
    finally:
        await client.transport.aclose()
    return out


def _serve_sync(options: MountOptions, ready: Callable[[str], None]) -> int:
    try:
        return asyncio.run(serve(options, ready))
    except (MesaError, OSError, RuntimeError) as exc:
        _say(f"mesa mount: error: {exc}", err=True)
        return exit_code(exc)


async def serve(options: MountOptions, ready: Callable[[str], None]) -> int:
    """Mount, call ``ready`` once usable, serve until unmounted; return the exit code."""
    import pyfuse3
    import pyfuse3.asyncio

    from mesa._client import Mesa
    from mesa.fuse._ops import operations
    from mesa.fuse._writer import Failure

    pyfuse3.asyncio.enable()
    fuse: Any = pyfuse3
    client = Mesa(org=options.org)
    async with client.fs.mount(repos=options.repos, ttl=options.ttl) as fs:
        ops = operations(fs, cache_timeout_s=options.cache_timeout_s, spool_dir=options.spool_dir)
        fuse.init(ops, options.mountpoint, _fuse_options(options))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, fuse.terminate)
        ops.notifier.start()
        names = ", ".join(f"{options.org}/{c.name}" for c in options.repos)
        record = MountRecord(
            os.getpid(),
            options.mountpoint,
            options.log_file,
            drain_s=options.unmount_timeout_s,
            org=options.org,
            repos=_served(fs.repo_mounts),
        )

        def switched(_repo: RepoMount) -> None:
            # `mesa status` reads which change each repo serves from the record.
            record.repos = _served(fs.repo_mounts)
            try:
                registry.write(record)
            except OSError as exc:
                log.warning("could not record the mount's new change (mesa status): %s", exc)

        for repo in fs.repo_mounts:
            repo.add_switch_listener(switched)
        registry.write(record)
        ready(f"mounted {names} at {options.mountpoint} (pid {os.getpid()})")
        lost: list[Failure] = []
        try:
            await fuse.main()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            # Write-behind: what was closed but not appended yet goes to the log now.
            try:
                lost = await ops.shutdown(options.unmount_timeout_s)
            finally:
                ops.notifier.stop()
                with contextlib.suppress(Exception):
                    fuse.close(unmount=True)
                record.finished = True
                record.lost = [{"path": f.path, "reason": f.reason} for f in lost]
                registry.write(record)
    for failure in lost:
        log.error("not published: %s: %s", failure.path, failure.reason)
    if lost:
        _say(f"mesa mount: {len(lost)} write(s) were not published:", err=True)
        for failure in lost:
            _say(f"  {failure.path}: {failure.reason}", err=True)
        return 1
    return 0


def _served(repos: Sequence[RepoMount]) -> list[MountedRepo]:
    """What the mount record says of ``repos``: the change each serves, the bookmark it follows."""
    return [MountedRepo(r.name, r.change_id, r.bookmark, r.read_only) for r in repos]


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
    if not options.log_file and not foreground:
        # A daemon has no terminal: it logs under MESA_HOME unless told otherwise.
        path = registry.default_log_file(options.mountpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        options.log_file = str(path)
    if options.log_file:
        logging.basicConfig(filename=options.log_file, level=level, format=fmt)
    else:
        logging.basicConfig(stream=sys.stderr, level=level, format=fmt)


def _daemonize(options: MountOptions) -> int:
    """Fork; the child serves in its own session, the parent waits until it is mounted."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        stop = start_progress(f"mounting {_names(options)} (folding the log)")
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                message = pipe.read().decode(errors="replace")
        finally:
            stop()
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


def unmount(mountpoint: str, *, lazy: bool = False, wait_s: float | None = None) -> int:
    """Unmount, wait for the mount process to drain, report what it could not publish.

    Returns 0 when the mount is gone and every write reached the log; 1 when the
    unmount failed, or the mount process reported writes it could not publish (each
    printed with its reason), or it exited without reporting.
    """
    target = os.path.abspath(mountpoint)
    record = registry.read(target)
    was_alive = record is not None and not record.finished and registry.alive(record.pid)
    code = _detach(target, lazy=lazy)
    if code != 0:
        return code
    if record is not None and not record.finished and not was_alive:
        # A mount left behind by a process that died before this unmount: clearing it
        # loses nothing more, but what that process had not published died with it.
        registry.remove(target)
        where = f" (its log: {record.log_file})" if record.log_file else ""
        _say(
            f"mesa unmount: warning: the mount process (pid {record.pid}) had died; "
            f"writes it had not published were lost with it{where}",
            err=True,
        )
        _say(f"unmounted {target}")
        return 0
    if record is None:
        _say(f"unmounted {target}")
        return 0
    outcome = _wait_outcome(record, record.drain_s + 30.0 if wait_s is None else wait_s)
    registry.remove(target)
    if outcome is None:
        where = f"; see {record.log_file}" if record.log_file else ""
        _say(
            f"mesa unmount: {target}: the mount process (pid {record.pid}) ended without "
            f"reporting; writes it had queued may not be published{where}",
            err=True,
        )
        return 1
    if outcome.lost:
        _say(f"mesa unmount: {target}: {len(outcome.lost)} write(s) were not published:", err=True)
        for item in outcome.lost:
            _say(f"  {item.get('path')}: {item.get('reason')}", err=True)
        return 1
    _say(f"unmounted {target}")
    return 0


def _wait_outcome(record: MountRecord, timeout_s: float) -> MountRecord | None:
    """Wait for the mount process to finish; return its final record (None if it did not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = registry.read(record.mountpoint)
        if current is not None and current.pid == record.pid and current.finished:
            return current
        if not registry.alive(record.pid) or time.monotonic() >= deadline:
            current = registry.read(record.mountpoint)
            finished = current is not None and current.pid == record.pid and current.finished
            return current if finished else None
        time.sleep(0.05)


def _detach(target: str, *, lazy: bool) -> int:
    """Unmount ``target`` with fusermount3 (or umount as root); return the exit code."""
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
            return 0
        errors.append(result.stderr.strip() or f"{argv[0]} exited {result.returncode}")
    if not attempts:
        errors.append("neither fusermount3 nor umount is available")
    _say(f"mesa unmount: {target}: {'; '.join(errors)}", err=True)
    return 1

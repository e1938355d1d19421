"""Version-control commands of the ``mesa`` CLI: new, log, show, status, diff, bookmark, merge.

Every command works on one repo (``-R/--repo``, default ``$MESA_REPO``) of one org
(``--org``, default ``$MESA_ORG``) through the REST-like API (``mesa.changes``,
``mesa.bookmarks``, ``mesa.diffs``); no mount is needed. A REVISION is ``@`` (the
repo's default bookmark, also the default), a bookmark name, a change id, or any
unique prefix of one (an ambiguous prefix is refused with the ids it matches).

``register(subparsers)`` adds the commands to the CLI's parser; ``run(args)`` runs the
parsed command and returns the exit code (`mesa._cli_out`: 1 for a failed operation, 2
for bad input, 3 for an unreachable server; one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from engine.ids import ROOT_CHANGE_ID, is_change_id
from mesa import _cli_out as ui
from mesa._changes import ChangeDiff, ChangeInfo
from mesa._client import Mesa
from mesa._records import ChangeRecord, change_key, changes_prefix
from mesa.errors import InvalidOptionsError, MesaError, NotFoundError

COMMANDS = ("new", "log", "show", "status", "diff", "bookmark", "merge")
SHORT = 12
#: The letters of change ids (jj's "reverse hex").
ID_LETTERS = frozenset("klmnopqrstuvwxyz")


def common_options() -> argparse.ArgumentParser:
    """The ``--org`` and ``-R/--repo`` options every repo command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--org", default=os.environ.get("MESA_ORG"), help="default: $MESA_ORG")
    common.add_argument(
        "-R", "--repo", default=os.environ.get("MESA_REPO"), help="default: $MESA_REPO"
    )
    return common


def register(subparsers: Any) -> None:
    """Add the version-control commands (see module docstring) to ``subparsers``."""
    common = common_options()

    def add(name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name, help=text, description=text, **kwargs
        )
        return parser

    new = add("new", "create a change on top of REV", parents=[common])
    new.add_argument("revision", nargs="?", default="@", help="bookmark or change (default @)")
    new.add_argument("-m", "--message", help="the new change's description")

    log = add(
        "log",
        "every visible head and its ancestors as a graph (like jj log)",
        parents=[common],
    )
    log.add_argument("revision_arg", nargs="?", metavar="REV", help="same as -r")
    log.add_argument("-r", "--revision", help="only REV and its ancestors")
    log.add_argument("-n", "--limit", type=int, default=50, help="at most N changes (0: all)")

    show = add("show", "a change's description and patch against its parent", parents=[common])
    show.add_argument("revision", nargs="?", default="@")
    show.add_argument("--name-only", action="store_true", help="list changed paths only")
    show.add_argument("--no-patch", action="store_true", help="the description only")
    show.add_argument("--git", action="store_true", help="git-style patch (the default)")

    status = add(
        "status",
        "a change's bookmarks, conflicts and changed files",
        parents=[common],
    )
    status.add_argument(
        "-r", "--revision", default="@", help="bookmark or change (default @: the repo's default)"
    )
    status.add_argument(
        "--mount",
        metavar="PATH",
        help="the change the live FUSE mount at PATH (its mount point or a path inside) serves",
    )

    diff = add(
        "diff",
        "unified diff against the parent, or between two revisions",
        parents=[common],
    )
    diff.add_argument("-r", "--revision", help="the change to diff against its parent (default @)")
    diff.add_argument("--from", dest="from_rev", metavar="REV", help="the old side")
    diff.add_argument("--to", dest="to_rev", metavar="REV", help="the new side (default @)")
    shape = diff.add_mutually_exclusive_group()
    shape.add_argument("--stat", action="store_true", help="per-file line counts only")
    shape.add_argument("--name-only", action="store_true", help="changed paths only")
    diff.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the patch (auto: on a terminal only)",
    )

    bookmark = add("bookmark", "list, create, move or delete bookmarks")
    actions = bookmark.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[common], help="list bookmarks", description="list bookmarks"
    )
    listing.add_argument("--glob", help="only names matching this pattern")
    create = actions.add_parser(
        "create", parents=[common], help="create NAME at REV", description="create NAME at REV"
    )
    create.add_argument("name")
    create.add_argument("-r", "--revision", default="@")
    move = actions.add_parser(
        "move", parents=[common], help="move NAME to REV", description="move NAME to REV"
    )
    move.add_argument("name")
    move.add_argument("-r", "--revision", required=True)
    move.add_argument("--allow-backwards", action="store_true", help="also non-fast-forward")
    delete = actions.add_parser(
        "delete", parents=[common], help="delete NAME", description="delete NAME"
    )
    delete.add_argument("name")

    merge = add(
        "merge",
        "merge bookmark SOURCE into TARGET with a merge change",
        parents=[common],
    )
    merge.add_argument("source", help="the bookmark to merge")
    merge.add_argument("--into", dest="target", help="target bookmark (default: the repo's)")
    merge.add_argument("--allow-conflicted", action="store_true")
    merge.add_argument("--delete-source", action="store_true")
    merge.add_argument("-m", "--message")


def run(args: argparse.Namespace) -> int:
    """Run a parsed version-control command; return the exit code."""
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, client: Mesa | None = None) -> int:
    """Run a parsed command with ``client`` (made from ``--org`` when None)."""
    own = client is None
    try:
        if getattr(args, "mount", None) is not None:
            _target_mount(args)
        if not args.repo:
            raise InvalidOptionsError("which repo? pass -R/--repo or set MESA_REPO")
        if client is None:
            client = Mesa(org=args.org)
        await _COMMANDS[args.command](client, args)
    except MesaError as exc:
        ui.error(f"mesa {args.command}", str(exc))
        return ui.exit_code(exc)
    finally:
        if own and client is not None:
            await client.transport.aclose()
    return 0


# -- commands ----------------------------------------------------------------------------


async def _new(client: Mesa, args: argparse.Namespace) -> None:
    base = await resolve(client, args.repo, args.revision)
    info = await client.changes.create(args.repo, base_change_id=base, message=args.message)
    _out(info.change_id)


async def _log(client: Mesa, args: argparse.Namespace) -> None:
    if args.limit < 0:
        raise InvalidOptionsError("--limit must be >= 0")
    if args.revision and args.revision_arg and args.revision != args.revision_arg:
        raise InvalidOptionsError("give the revision once: REV or -r REV")
    revision = args.revision or args.revision_arg
    bookmarks = await _bookmarks_by_change(client, args.repo)
    current = await resolve(client, args.repo, "@")
    with ui.progress(f"reading the changes of {args.repo}"):
        records = await _all_changes(client, args.repo)
    if revision is not None:
        start = await resolve(client, args.repo, revision)
        records = _ancestors(records, start)
    limit = args.limit or len(records)
    order = _graph_order(records)[:limit]
    shown = set(order)
    lines = graph_lines(order, {c: records[c].parents for c in order}, shown)
    for prefix, change in lines:
        if change is None:
            ui.out(prefix.rstrip())
            continue
        info = await client.changes.get(args.repo, change)
        symbol = "@" if change == current else ("x" if info.is_conflicted else "○")
        ui.out(prefix.replace("*", symbol, 1) + _log_line(info, bookmarks.get(change, [])))


async def _show(client: Mesa, args: argparse.Namespace) -> None:
    change = await resolve(client, args.repo, args.revision)
    info = await client.changes.get(args.repo, change)
    bookmarks = (await _bookmarks_by_change(client, args.repo)).get(change, [])
    _out(f"Change ID: {info.change_id}")
    _out(f"Commit ID: {info.commit_oid}")
    _out(f"Parents:   {' '.join(info.parents) or '(none)'}")
    _out(f"Author:    {info.author or '(unknown)'}")
    _out(f"Date:      {_when(info.updated_at_ms)}")
    if bookmarks:
        _out(f"Bookmarks: {' '.join(bookmarks)}")
    if info.is_conflicted:
        _out(f"Conflicts: {' '.join(info.conflicted_paths)}")
    _out("")
    for line in (info.message or "(no description set)").splitlines() or [""]:
        _out(f"    {line}")
    if args.no_patch:
        return
    diff = await client.diffs.get(args.repo, head_change_id=change, patch=not args.name_only)
    _out("")
    if args.name_only:
        _print_names(diff)
        return
    _print_patch(diff.patch, "auto")


async def _status(client: Mesa, args: argparse.Namespace) -> None:
    change = await resolve(client, args.repo, args.revision)
    info = await client.changes.get(args.repo, change)
    bookmarks = (await _bookmarks_by_change(client, args.repo)).get(change, [])
    diff = await client.diffs.get(args.repo, head_change_id=change, patch=False)
    mount = getattr(args, "mounted", None)
    where = f"{args.repo}@{args.revision}" if args.revision != "@" and mount is None else args.repo
    ui.out(f"Repo:      {where}")
    if mount is not None:
        ui.out(f"Mount:     {mount}")
    ui.out(f"Change:    {info.change_id[:SHORT]} {info.message or '(no description set)'}")
    ui.out(f"Bookmarks: {' '.join(bookmarks) or '(none)'}")
    parents = " ".join(p[:SHORT] for p in info.parents if p != ROOT_CHANGE_ID)
    ui.out(f"Parents:   {parents or '(root)'}")
    if mount is None:
        for i, line in enumerate(_live_mount_lines(client.org, args.repo, change)):
            ui.out(("Mounts:    " if i == 0 else "           ") + line)
    if info.is_conflicted:
        ui.out(f"Conflicted files ({len(info.conflicted_paths)}):", style="bold red")
        for path in info.conflicted_paths:
            ui.out(f"  C {path}", style="red")
    entries = [*diff.entries, *diff.conflicted_entries]
    if not entries:
        ui.out("No files changed against the parent.")
        return
    ui.out(f"Changed against the parent ({len(entries)}):")
    for entry in sorted(entries, key=lambda e: e.path):
        flag = "C" if entry.is_conflicted else entry.status[0].upper()
        ui.out(f"  {flag} {entry.path}", style=_FLAG_STYLE.get(flag))


async def _diff(client: Mesa, args: argparse.Namespace) -> None:
    if args.revision is not None and (args.from_rev or args.to_rev):
        raise InvalidOptionsError("give -r REV, or --from/--to, not both")
    if args.from_rev is None:
        head = await resolve(client, args.repo, args.revision or args.to_rev or "@")
        diff = await client.diffs.get(
            args.repo, head_change_id=head, patch=not (args.stat or args.name_only)
        )
    else:
        base = await resolve(client, args.repo, args.from_rev)
        head = await resolve(client, args.repo, args.to_rev or "@")
        diff = await client.diffs.get(
            args.repo,
            head_change_id=head,
            base_change_id=base,
            patch=not (args.stat or args.name_only),
        )
    if args.name_only:
        _print_names(diff)
    elif args.stat:
        entries = sorted([*diff.entries, *diff.conflicted_entries], key=lambda e: e.path)
        rows = [
            [
                e.path + (" (conflict)" if e.is_conflicted else ""),
                f"+{e.additions}",
                f"-{e.deletions}",
            ]
            for e in entries
        ]
        ui.table(["path", "added", "deleted"], rows)
        stats = diff.stats
        ui.out(
            f"{stats.entries + stats.conflicted_entries} file(s) changed, "
            f"{stats.additions} insertion(s)(+), {stats.deletions} deletion(s)(-)"
        )
    else:
        _print_patch(diff.patch, args.color)


async def _bookmark(client: Mesa, args: argparse.Namespace) -> None:
    repo = args.repo
    if args.action == "list":
        for bookmark in await client.bookmarks.list(repo, glob=args.glob):
            default = " (default)" if bookmark.is_default else ""
            _out(f"{bookmark.name}: {bookmark.change_id[:SHORT]}{default}")
    elif args.action == "create":
        change = await resolve(client, repo, args.revision)
        await client.bookmarks.create(repo, args.name, change_id=change)
        _out(f"created {args.name} at {change[:SHORT]}")
    elif args.action == "move":
        change = await resolve(client, repo, args.revision)
        await client.bookmarks.move(
            repo, args.name, change_id=change, allow_backwards=args.allow_backwards
        )
        _out(f"moved {args.name} to {change[:SHORT]}")
    else:
        await client.bookmarks.delete(repo, args.name)
        _out(f"deleted {args.name}")


async def _merge(client: Mesa, args: argparse.Namespace) -> None:
    target = args.target or (await client.repos.get(args.repo)).default_bookmark
    with ui.progress(f"merging {args.source} into {target}"):
        result = await client.bookmarks.merge(
            args.repo,
            target=target,
            source=args.source,
            allow_conflicted=args.allow_conflicted,
            delete_source=args.delete_source,
            message=args.message,
        )
    if result.merge_type == "no_op":
        _out(f"nothing to merge: {target} already contains {args.source}")
    else:
        _out(f"merged {args.source} into {target}: {result.change_id}")
    for path in result.conflict_paths:
        _out(f"conflict: {path}")
    if result.source_deleted:
        _out(f"deleted {args.source}")


_COMMANDS = {
    "new": _new,
    "log": _log,
    "show": _show,
    "status": _status,
    "diff": _diff,
    "bookmark": _bookmark,
    "merge": _merge,
}
_FLAG_STYLE = {"A": "green", "D": "red", "M": "yellow", "C": "bold red"}


# -- helpers -----------------------------------------------------------------------------


def _target_mount(args: argparse.Namespace) -> None:
    """Point ``status --mount PATH`` at the repo and change the live mount at PATH serves.

    PATH is the mount point or a path inside it; inside ``MOUNTPOINT/<org>/<repo>`` it
    names that repo, else ``-R`` does, else the mount's only repo. Sets ``org``,
    ``repo``, ``revision`` (the change) and ``mounted`` (the line describing the mount).

    Raises:
        FileNotFoundError: no live mount at PATH, or PATH is in a repo it does not serve.
        InvalidOptionsError: ``-r`` given too, or the mount serves several repos and
            neither PATH nor ``-R`` says which.
        MesaError: the mount's record does not say which changes it serves.
    """
    from mesa import server
    from mesa.fuse import _registry

    if args.revision != "@":
        raise InvalidOptionsError("give --mount PATH or -r REV, not both")
    target = os.path.abspath(args.mount)
    real = os.path.realpath(target)
    live = _registry.live()
    inside = [r for r in live if _under(target, r.mountpoint) or _under(real, r.mountpoint)]
    if not inside:
        known = ", ".join(r.mountpoint for r in live) or "none"
        raise FileNotFoundError(
            errno.ENOENT,
            f"no live mesa mount there (live mounts under {server.mesa_home()}: {known})",
            args.mount,
        )
    record = max(inside, key=lambda r: len(r.mountpoint))
    if record.org is None or not record.repos:
        raise MesaError(
            f"the mount at {record.mountpoint} (pid {record.pid}) does not record the changes "
            "it serves (made by an older mesa): unmount and mount it again"
        )
    names = [r.name for r in record.repos]
    mounted = ", ".join(f"{record.org}/{n}" for n in names)
    path = target if _under(target, record.mountpoint) else real
    rest = [p for p in path[len(record.mountpoint) :].split("/") if p]
    name = args.repo
    if rest:
        if len(rest) < 2 or rest[0] != record.org or rest[1] not in names:
            raise FileNotFoundError(
                errno.ENOENT,
                f"not in a repo of the mount at {record.mountpoint}: its paths are "
                f"{record.mountpoint}/<org>/<repo>/... (mounted there: {mounted})",
                args.mount,
            )
        if name is not None and name != rest[1]:
            raise InvalidOptionsError(f"--mount {args.mount} is in repo {rest[1]}, not {name}")
        name = rest[1]
    elif name is None:
        if len(names) > 1:
            raise InvalidOptionsError(
                f"the mount at {record.mountpoint} serves {mounted}: pass -R/--repo or a path "
                "inside one"
            )
        name = names[0]
    repo = next((r for r in record.repos if r.name == name), None)
    if repo is None:
        raise FileNotFoundError(
            errno.ENOENT,
            f"repo {record.org}/{name} is not mounted there (mounted there: {mounted})",
            args.mount,
        )
    args.org, args.repo, args.revision = record.org, repo.name, repo.change_id
    follows = f"follows bookmark {repo.bookmark}" if repo.bookmark else "pinned to this change"
    ro = ", read-only" if repo.read_only else ""
    args.mounted = f"{record.mountpoint}/{record.org}/{repo.name} (pid {record.pid}{ro}), {follows}"


def _under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or inside it (both absolute)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _live_mount_lines(org: str, repo: str, shown: str) -> list[str]:
    """One line per live FUSE mount of ``org/repo``: where, its change, what it follows."""
    from mesa.fuse import _registry

    lines = []
    for record in _registry.live():
        for mounted in record.repos:
            if record.org != org or mounted.name != repo:
                continue
            follows = f"follows {mounted.bookmark}" if mounted.bookmark else "pinned"
            this = ", this change" if mounted.change_id == shown else ""
            lines.append(
                f"{record.mountpoint}/{org}/{repo}: {mounted.change_id[:SHORT]} ({follows}{this})"
            )
    return lines


async def resolve(client: Mesa, repo: str, revision: str) -> str:
    """Return the change id a REVISION names (see module docstring).

    Raises:
        NotFoundError: nothing matches.
        InvalidOptionsError: a change id prefix is ambiguous (the message lists the
            matching ids).
    """
    if revision == "@":
        revision = (await client.repos.get(repo)).default_bookmark
    try:
        return (await client.bookmarks.get(repo, revision)).change_id
    except (NotFoundError, InvalidOptionsError):
        pass
    if is_change_id(revision):
        return (await client.changes.get(repo, revision)).change_id
    if not revision or any(c not in ID_LETTERS for c in revision):
        raise NotFoundError(f"no bookmark or change {revision!r} in {repo}")
    matches = await match_prefix(client, repo, revision)
    if len(matches) > 1:
        shown = ", ".join(m[: max(SHORT, len(revision) + 1)] for m in matches[:10])
        more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        raise InvalidOptionsError(
            f"change prefix {revision!r} is ambiguous: it matches {shown}{more}"
        )
    if not matches:
        raise NotFoundError(f"no bookmark or change {revision!r} in {repo}")
    return matches[0]


async def match_prefix(client: Mesa, repo: str, prefix: str) -> list[str]:
    """Return the ids of ``repo``'s changes starting with ``prefix``, sorted."""
    await client.repos.get(repo)  # NotFoundError for a missing repo
    keys = await client._ctx.gateway.kv_keys(
        client.management_token(), changes_prefix(client.org, repo) + prefix
    )
    return sorted(key.rsplit(".", 1)[1] for key in keys)


async def _all_changes(client: Mesa, repo: str) -> dict[str, ChangeRecord]:
    """Every change record of ``repo`` by id (the root change aside)."""
    gateway, token = client._ctx.gateway, client.management_token()
    found: dict[str, ChangeRecord] = {}
    for key in await gateway.kv_keys(token, changes_prefix(client.org, repo)):
        change = key.rsplit(".", 1)[1]
        entry = await gateway.kv_get(token, change_key(client.org, repo, change))
        if entry is not None:
            found[change] = ChangeRecord.decode(entry.value)
    return found


def _ancestors(records: dict[str, ChangeRecord], start: str) -> dict[str, ChangeRecord]:
    """The records of ``start`` and its ancestors."""
    out: dict[str, ChangeRecord] = {}
    queue = [start]
    while queue:
        change = queue.pop()
        record = records.get(change)
        if record is None or change in out:
            continue
        out[change] = record
        queue.extend(record.parents)
    return out


def _graph_order(records: dict[str, ChangeRecord]) -> list[str]:
    """Ids newest first, every change before its parents (children first, as jj log)."""
    children: dict[str, int] = dict.fromkeys(records, 0)
    for record in records.values():
        for parent in record.parents:
            if parent in children:
                children[parent] += 1

    def newest(change: str) -> tuple[int, str]:
        record = records[change]
        return (-record.created_at_ms, change)

    ready = sorted((c for c, n in children.items() if n == 0), key=newest)
    order: list[str] = []
    while ready:
        change = ready.pop(0)
        order.append(change)
        for parent in records[change].parents:
            if parent in children:
                children[parent] -= 1
                if children[parent] == 0:
                    ready.append(parent)
                    ready.sort(key=newest)
    return order


def graph_lines(
    order: list[str], parents: dict[str, tuple[str, ...]], shown: set[str]
) -> list[tuple[str, str | None]]:
    """Lay ``order`` out as a graph: (prefix, change) rows, and (line, None) connectors.

    Each change row's prefix has ``*`` where the change's node goes. A lane per
    change awaited below; lanes that reach the same change join with ``├─╯``.
    """
    lanes: list[str] = []
    rows: list[tuple[str, str | None]] = []
    for change in order:
        if change not in lanes:
            lanes.append(change)
        col = lanes.index(change)
        rows.append(("".join("* " if i == col else "│ " for i in range(len(lanes))), change))
        wanted = [p for p in parents.get(change, ()) if p in shown]
        if not wanted:
            lanes.pop(col)
            continue
        lanes[col] = wanted[0]
        for parent in wanted[1:]:
            if parent not in lanes:
                lanes.append(parent)
        while True:
            dup = next((j for j, lane in enumerate(lanes) if lane in lanes[:j]), None)
            if dup is None:
                break
            into = lanes.index(lanes[dup])
            cells = []
            for k in range(len(lanes)):
                if k == into:
                    cells.append("├─")
                elif into < k < dup:
                    cells.append("──")
                elif k == dup:
                    cells.append("╯ ")
                else:
                    cells.append("│ ")
            rows.append(("".join(cells), None))
            lanes.pop(dup)
    return rows


async def _bookmarks_by_change(client: Mesa, repo: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for bookmark in await client.bookmarks.list(repo):
        out.setdefault(bookmark.change_id, []).append(bookmark.name)
    return out


def _log_line(info: ChangeInfo, bookmarks: list[str]) -> str:
    parts = [info.change_id[:SHORT], info.commit_oid[:SHORT], _when(info.updated_at_ms)]
    parts.append(info.author or "(unknown)")
    parts.extend(bookmarks)
    parts.append(info.message.splitlines()[0] if info.message else "(no description set)")
    if info.is_conflicted:
        parts.append("(conflict)")
    return " ".join(parts)


def _print_names(diff: ChangeDiff) -> None:
    for entry in sorted((*diff.entries, *diff.conflicted_entries), key=lambda e: e.path):
        flag = "C" if entry.is_conflicted else entry.status[0].upper()
        _out(f"{flag} {entry.path}")


_PATCH_STYLE = (
    ("<<<<<<<", "bold magenta"),
    (">>>>>>>", "bold magenta"),
    ("%%%%%%%", "magenta"),
    ("+++++++", "magenta"),
    ("+++", "bold"),
    ("---", "bold"),
    ("diff ", "bold"),
    ("@@", "cyan"),
    ("+", "green"),
    ("-", "red"),
)


def _print_patch(patch: str, color: str) -> None:
    """Write a unified patch; coloured on a terminal (or with ``--color always``)."""
    if color == "never" or (color == "auto" and not sys.stdout.isatty()):
        sys.stdout.write(patch)
        return
    console = Console(file=sys.stdout, force_terminal=True, highlight=False, soft_wrap=True)
    for line in patch.splitlines():
        style = next((s for p, s in _PATCH_STYLE if line.startswith(p)), None)
        console.print(escape(line), style=style)


def _when(time_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")

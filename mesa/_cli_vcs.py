"""Version-control commands of the ``mesa`` CLI: new, log, show, bookmark, merge.

Every command works on one repo (``-R/--repo``, default ``$MESA_REPO``) of one org
(``--org``, default ``$MESA_ORG``) through the REST-like API (``mesa.changes``,
``mesa.bookmarks``, ``mesa.diffs``); no mount is needed. A REVISION is ``@`` (the
repo's default bookmark, also the default), a bookmark name, a change id, or a unique
prefix of one (4 characters or more).

``register(subparsers)`` adds the commands to the CLI's parser; ``run(args)`` runs the
parsed command and returns the exit code (1 for an SDK error, printed on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from typing import Any

from engine.ids import ROOT_CHANGE_ID, is_change_id
from mesa._changes import ChangeInfo
from mesa._client import Mesa
from mesa._records import changes_prefix
from mesa.errors import InvalidOptionsError, MesaError, NotFoundError

COMMANDS = ("new", "log", "show", "bookmark", "merge")
MIN_PREFIX = 4
SHORT = 12


def register(subparsers: Any) -> None:
    """Add ``new``, ``log``, ``show``, ``bookmark`` and ``merge`` to ``subparsers``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--org", default=os.environ.get("MESA_ORG"), help="default: $MESA_ORG")
    common.add_argument(
        "-R", "--repo", default=os.environ.get("MESA_REPO"), help="default: $MESA_REPO"
    )

    new = subparsers.add_parser("new", parents=[common], help="create a change on top of REV")
    new.add_argument("revision", nargs="?", default="@", help="bookmark or change (default @)")
    new.add_argument("-m", "--message", help="the new change's description")

    log = subparsers.add_parser("log", parents=[common], help="changes reachable from REV")
    log.add_argument("revision", nargs="?", default="@")
    log.add_argument("-n", "--limit", type=int, default=50, help="at most N (0: all)")

    show = subparsers.add_parser(
        "show", parents=[common], help="a change's description and patch against its parent"
    )
    show.add_argument("revision", nargs="?", default="@")
    show.add_argument("--name-only", action="store_true", help="list changed paths only")
    show.add_argument("--no-patch", action="store_true", help="the description only")
    show.add_argument("--git", action="store_true", help="git-style patch (the default)")

    bookmark = subparsers.add_parser("bookmark", help="list, create, move or delete bookmarks")
    actions = bookmark.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="list bookmarks")
    listing.add_argument("--glob", help="only names matching this pattern")
    create = actions.add_parser("create", parents=[common], help="create NAME at REV")
    create.add_argument("name")
    create.add_argument("-r", "--revision", default="@")
    move = actions.add_parser("move", parents=[common], help="move NAME to REV")
    move.add_argument("name")
    move.add_argument("-r", "--revision", required=True)
    move.add_argument("--allow-backwards", action="store_true", help="also non-fast-forward")
    delete = actions.add_parser("delete", parents=[common], help="delete NAME")
    delete.add_argument("name")

    merge = subparsers.add_parser(
        "merge", parents=[common], help="merge bookmark SOURCE into TARGET (a merge change)"
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
        if not args.repo:
            raise InvalidOptionsError("which repo? pass -R/--repo or set MESA_REPO")
        if client is None:
            client = Mesa(org=args.org)
        await _COMMANDS[args.command](client, args)
    except MesaError as exc:
        _err(f"mesa {args.command}: error: {exc}")
        return 1
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
    start = await resolve(client, args.repo, args.revision)
    bookmarks = await _bookmarks_by_change(client, args.repo)
    if start == ROOT_CHANGE_ID:
        return
    for info in await client.changes.list(args.repo, change_id=start, limit=args.limit):
        _out(_log_line(info, bookmarks.get(info.change_id, [])))


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
        for entry in (*diff.entries, *diff.conflicted_entries):
            flag = "C" if entry.is_conflicted else entry.status[0].upper()
            _out(f"{flag} {entry.path}")
        return
    sys.stdout.write(diff.patch)


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
    result = await client.bookmarks.merge(
        args.repo,
        target=target,
        source=args.source,
        allow_conflicted=args.allow_conflicted,
        delete_source=args.delete_source,
        message=args.message,
    )
    if result.merge_type == "no_op":
        _out(f"nothing to merge: {args.source} and {target} are the same change")
    else:
        _out(f"merged {args.source} into {target}: {result.change_id}")
    for path in result.conflict_paths:
        _out(f"conflict: {path}")
    if result.source_deleted:
        _out(f"deleted {args.source}")


_COMMANDS = {"new": _new, "log": _log, "show": _show, "bookmark": _bookmark, "merge": _merge}


# -- helpers -----------------------------------------------------------------------------


async def resolve(client: Mesa, repo: str, revision: str) -> str:
    """Return the change id a REVISION names (see module docstring).

    Raises:
        NotFoundError: nothing matches.
        InvalidOptionsError: a change id prefix is too short or ambiguous.
    """
    if revision == "@":
        revision = (await client.repos.get(repo)).default_bookmark
    try:
        return (await client.bookmarks.get(repo, revision)).change_id
    except (NotFoundError, InvalidOptionsError):
        pass
    if is_change_id(revision):
        return (await client.changes.get(repo, revision)).change_id
    if len(revision) < MIN_PREFIX or any(c not in "klmnopqrstuvwxyz" for c in revision):
        raise NotFoundError(f"no bookmark or change {revision!r} in {repo}")
    prefix = changes_prefix(client.org, repo) + revision
    keys = await client.transport.kv_keys(client.management_token(), prefix)
    if len(keys) > 1:
        raise InvalidOptionsError(f"change prefix {revision!r} is ambiguous ({len(keys)} changes)")
    if not keys:
        raise NotFoundError(f"no bookmark or change {revision!r} in {repo}")
    return keys[0].rsplit(".", 1)[1]


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


def _when(time_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")

"""``mesa repo create/list/info/delete``: the repositories of an org.

``repo delete`` asks for the repo's name on a terminal (``--yes`` skips the question;
without a terminal ``--yes`` is required). It deletes the repo's records: the repo,
its bookmarks, changes and snapshot records. The change logs and blobs stay in the
transport, unreachable (the transport has no delete for them yet; docs/cli.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from typing import Any

from mesa import _cli_out as ui
from mesa._client import Mesa
from mesa._records import changes_prefix
from mesa.errors import InvalidOptionsError, MesaError

ACTIONS = ("create", "list", "info", "delete")


def register(subparsers: Any) -> None:
    """Add ``repo`` and its actions to ``subparsers``."""
    org = argparse.ArgumentParser(add_help=False)
    org.add_argument("--org", default=os.environ.get("MESA_ORG"), help="default: $MESA_ORG")
    text = "create, list, inspect or delete repos"
    repo = subparsers.add_parser("repo", help=text, description=text)
    actions = repo.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=[org], help=help_text, description=help_text
        )
        return parser

    create = add("create", "create repo NAME (its default bookmark on an empty change)")
    create.add_argument("name")
    create.add_argument("--default-bookmark", default="main", metavar="B", help="default: main")
    add("list", "list the org's repos (name, default bookmark, changes, created)")
    info = add("info", "a repo's default bookmark, bookmarks and changes")
    info.add_argument("name")
    delete = add("delete", "delete repo NAME and its history (asks first)")
    delete.add_argument("name")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask")


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``repo`` command; return the exit code."""
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, client: Mesa | None = None) -> int:
    """Run ``repo ACTION`` with ``client`` (made from ``--org`` when None)."""
    own = client is None
    try:
        if client is None:
            client = Mesa(org=args.org)
        return await _ACTIONS[args.action](client, args)
    except MesaError as exc:
        ui.error(f"mesa repo {args.action}", str(exc))
        return ui.exit_code(exc)
    finally:
        if own and client is not None:
            await client.transport.aclose()


async def _create(client: Mesa, args: argparse.Namespace) -> int:
    repo = await client.repos.create(args.name, default_bookmark=args.default_bookmark)
    ui.out(f"created {client.org}/{repo.name} (default bookmark {repo.default_bookmark})")
    return 0


async def _list(client: Mesa, args: argparse.Namespace) -> int:
    rows = [
        [
            repo.name,
            repo.default_bookmark,
            str(await _count_changes(client, repo.name)),
            _when(repo.created_at_ms),
        ]
        for repo in await client.repos.list()
    ]
    ui.table(["repo", "default bookmark", "changes", "created"], rows)
    return 0


async def _info(client: Mesa, args: argparse.Namespace) -> int:
    repo = await client.repos.get(args.name)
    bookmarks = await client.bookmarks.list(repo.name)
    ui.out(f"Repo:             {client.org}/{repo.name}")
    ui.out(f"Default bookmark: {repo.default_bookmark}")
    ui.out(f"Created:          {_when(repo.created_at_ms)}")
    ui.out(f"Changes:          {await _count_changes(client, repo.name)}")
    ui.out(f"Race window:      {repo.race_window_ms} ms")
    ui.out(f"Bookmarks ({len(bookmarks)}):")
    for bookmark in bookmarks:
        default = " (default)" if bookmark.is_default else ""
        ui.out(f"  {bookmark.name}: {bookmark.change_id[:12]}{default}")
    return 0


async def _delete(client: Mesa, args: argparse.Namespace) -> int:
    repo = await client.repos.get(args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidOptionsError(
                f"deleting {client.org}/{repo.name} needs confirmation: pass --yes"
            )
        sys.stderr.write(
            f"Delete {client.org}/{repo.name} and all its history? Type its name to confirm: "
        )
        sys.stderr.flush()
        answer = sys.stdin.readline().strip()
        if answer != repo.name:
            ui.error("mesa repo delete", "not confirmed; nothing deleted")
            return ui.EXIT_FAILED
    with ui.progress(f"deleting {client.org}/{repo.name}"):
        await client.repos.delete(repo.name)
    ui.out(f"deleted {client.org}/{repo.name}")
    return 0


_ACTIONS = {"create": _create, "list": _list, "info": _info, "delete": _delete}


async def _count_changes(client: Mesa, repo: str) -> int:
    keys = await client._ctx.gateway.kv_keys(
        client.management_token(), changes_prefix(client.org, repo)
    )
    return len(keys)


def _when(time_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")

"""API key and token commands of the ``mesa`` CLI: ``mesa keys ...``, ``mesa tokens create``.

- ``mesa keys create --org ORG [--name N] [--scope read|write|admin ...] [--repo NAME ...]
  [--expires-in S]`` registers a new key and prints its secret once (stdout: the key
  alone on the last line, so ``$(mesa keys create ... | tail -1)`` captures it).
- ``mesa keys list --org ORG`` prints one line per key: id, scopes, repos, expiry, state.
- ``mesa keys revoke --org ORG KEY_ID`` revokes a key.
- ``mesa tokens create --org ORG --repo app [--read-only] [--ttl S]`` prints a token.

The client's credential is ``MESA_API_KEY`` (or the embedded default's admin key);
managing keys needs an admin key. ``register(subparsers)`` adds the commands;
``run(args)`` runs one and returns the exit code (0 done, 1 refused or failed, 2 bad
input, 3 server unreachable), with one line on stderr for an error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from typing import Any

from mesa._client import Mesa
from mesa.errors import InvalidOptionsError, MesaConnectionError, MesaError

COMMANDS = ("keys", "tokens")


def register(subparsers: Any) -> None:
    """Add ``keys`` and ``tokens`` to the CLI's ``subparsers``."""
    org = argparse.ArgumentParser(add_help=False)
    org.add_argument("--org", default=os.environ.get("MESA_ORG"), help="default: $MESA_ORG")
    text = "create, list and revoke API keys (needs an admin key)"
    keys = subparsers.add_parser("keys", help=text, description=text)
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    text = "create a key and print its secret once"
    create = actions.add_parser("create", help=text, description=text, parents=[org])
    create.add_argument("--name", default=None)
    create.add_argument(
        "--scope",
        action="append",
        choices=["read", "write", "admin"],
        help="repeat for several (default: read and write)",
    )
    create.add_argument("--repo", action="append", help="limit it to these repos (repeat)")
    create.add_argument("--expires-in", type=int, metavar="S", help="seconds until it expires")
    text = "list the org's keys (never their secrets)"
    actions.add_parser("list", help=text, description=text, parents=[org])
    text = "revoke a key: its tokens are refused from now on"
    revoke = actions.add_parser("revoke", help=text, description=text, parents=[org])
    revoke.add_argument("key_id")
    text = "sign short-lived tokens for sandboxes (locally, no network)"
    tokens = subparsers.add_parser("tokens", help=text, description=text)
    token_actions = tokens.add_subparsers(dest="tokens_action", required=True, metavar="ACTION")
    text = "print a token for the given repos"
    make = token_actions.add_parser("create", help=text, description=text, parents=[org])
    make.add_argument("--repo", action="append", required=True, help="repeat for several")
    make.add_argument("--read-only", action="store_true")
    make.add_argument("--ttl", type=int, default=3600, metavar="S", help="seconds (1..86400)")


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``keys`` or ``tokens`` command; return the exit code."""
    command = f"mesa {args.command} {getattr(args, 'keys_action', None) or args.tokens_action}"
    try:
        if not args.org:
            raise InvalidOptionsError("--org is required (or set MESA_ORG)")
        mesa = Mesa(org=args.org)
        if args.command == "tokens":
            scopes = ["read"] if args.read_only else ["read", "write"]
            made = mesa.tokens.create(repos=args.repo, scopes=scopes, ttl_seconds=args.ttl)
            sys.stdout.write(made.token + "\n")
            return 0
        return asyncio.run(_keys(mesa, args))
    except InvalidOptionsError as exc:
        sys.stderr.write(f"{command}: error: {exc}\n")
        return 2
    except MesaConnectionError as exc:
        sys.stderr.write(f"{command}: error: {exc}\n")
        return 3
    except MesaError as exc:
        sys.stderr.write(f"{command}: error: {exc}\n")
        return 1


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _keys(mesa: Mesa, args: argparse.Namespace) -> int:
    if args.keys_action == "create":
        key = await mesa.api_keys.create(
            name=args.name,
            scopes=args.scope or ["read", "write"],
            repos=args.repo,
            expires_in_seconds=args.expires_in,
        )
        repos = ",".join(key.repos) if key.repos is not None else "*"
        sys.stderr.write(f"created {key.id} scopes={','.join(key.scopes)} repos={repos}\n")
        sys.stderr.write(f"expires {_when(key.expires_at)}; the key is shown once:\n")
        sys.stdout.write(f"{key.key}\n")
        return 0
    if args.keys_action == "list":
        for key in await mesa.api_keys.list():
            repos = ",".join(key.repos) if key.repos is not None else "*"
            state = "revoked" if key.revoked else "active"
            sys.stdout.write(
                f"{key.id}\t{key.name or '-'}\t{','.join(key.scopes)}\t{repos}\t"
                f"expires {_when(key.expires_at)}\t{state}\n"
            )
        return 0
    await mesa.api_keys.revoke(args.key_id)
    sys.stdout.write(f"revoked {args.key_id}\n")
    return 0

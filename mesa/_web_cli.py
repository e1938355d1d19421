"""``mesa web`` on the command line: parse the repos and run the server (mesa._web)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

WEB_MISSING = "mesa web needs the web extra: pip install 'mesafs[web]'"


def run_web(args: argparse.Namespace) -> int:
    """Serve the repos of ``args`` until interrupted; return the exit code."""
    from mesa.fuse._cli import _maybe_prefix, _resolve_prefixes, parse_repos

    org = args.org or os.environ.get("MESA_ORG")
    if not org:
        sys.stderr.write("mesa web: --org is required (or set MESA_ORG)\n")
        return 2
    try:
        from mesa._web import serve
    except ImportError as exc:
        sys.stderr.write(f"mesa web: {WEB_MISSING} ({exc})\n")
        return 2
    if args.events_kept < 1:
        sys.stderr.write("mesa web: --events-kept must be at least 1\n")
        return 2
    try:
        configs = parse_repos(args.repo, [])
    except ValueError as exc:
        sys.stderr.write(f"mesa web: {exc}\n")
        return 2

    async def main() -> int:
        resolved = configs
        if any(_maybe_prefix(c) for c in configs):
            resolved = await _resolve_prefixes(org, configs)
        return await serve(
            org, resolved, host=args.host, port=args.port, events_kept=args.events_kept
        )

    return asyncio.run(main())

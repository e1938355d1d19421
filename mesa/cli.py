"""The ``mesa`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="mesa", description="mesafs: a realtime versioned filesystem for AI agents"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="two mounts edit one change; a racing pair makes a conflict"
    )
    demo.add_argument("--org", default="acme")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from mesa._demo import run_demo

        return asyncio.run(run_demo(args.org))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

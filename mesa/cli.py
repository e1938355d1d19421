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
    demo.add_argument("--peer", metavar="REPO", help=argparse.SUPPRESS)
    server = commands.add_parser(
        "server", help="run the local NATS JetStream server in the foreground, or manage it"
    )
    server.add_argument(
        "action", nargs="?", choices=["run", "status", "stop", "start"], default="run"
    )
    server.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port for `run` (default: the home's recorded port, else 4222)",
    )
    server.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="monitoring port for `run` (default: the home's recorded one, else 8222)",
    )
    from mesa.fuse._cli import add_commands  # does not import pyfuse3

    add_commands(commands)
    from mesa import _cli_vcs

    _cli_vcs.register(commands)
    from mesa import _cli_keys

    _cli_keys.register(commands)
    args = parser.parse_args(argv)
    if args.command in _cli_keys.COMMANDS:
        return _cli_keys.run(args)
    if args.command in _cli_vcs.COMMANDS:
        return _cli_vcs.run(args)
    if args.command in ("mount", "unmount"):
        from mesa.fuse._cli import run

        return run(args)
    if args.command == "server":
        return _server_command(args.action, args.port, args.http_port)
    if args.command == "demo":
        from mesa._demo import run_demo, run_peer

        if args.peer:
            return asyncio.run(run_peer(args.org, args.peer))
        return asyncio.run(run_demo(args.org))
    parser.error(f"unknown command {args.command}")
    return 2


def _server_command(action: str, port: int | None, http_port: int | None) -> int:
    from mesa import server

    home = server.mesa_home()
    if action == "status":
        info = server.status(home)
        if info is None:
            print(f"not running (MESA_HOME={home})")
            return 1
        print(f"running: pid {info.pid}, {info.url}, monitoring {info.http_url}, MESA_HOME={home}")
        return 0
    if action == "stop":
        stopped = server.stop(home)
        print("stopped" if stopped else "not running")
        return 0
    if action == "start":
        info = server.ensure_running(home)
        print(f"running: pid {info.pid}, {info.url}")
        return 0
    # Without --port the home keeps its address: clients of earlier starts reconnect.
    recorded = server.recorded_ports(home) or (4222, 8222)
    port = recorded[0] if port is None else port
    http_port = recorded[1] if http_port is None else http_port
    print(f"mesa server: nats-server on 127.0.0.1:{port}, data in {home} (Ctrl-C stops it)")
    return server.run_foreground(home, port=port, http_port=http_port)


if __name__ == "__main__":
    sys.exit(main())

"""The ``mesa`` command line (docs/cli.md).

``# PYTHON_ARGCOMPLETE_OK``: shell completion comes from argcomplete
(``eval "$(mesa completion bash)"``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import argcomplete
import argcomplete.shell_integration

from mesa._cli_out import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    describe,
    error,
    exit_code,
    silence_stdout,
)
from mesa._version import __version__
from mesa.errors import MesaError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) that point at ``--help``."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's parser (every command, with its help)."""
    parser = _Parser(
        prog="mesa", description="mesafs: a realtime versioned filesystem for AI agents"
    )
    parser.add_argument("--version", action="version", version=f"mesa {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text = "two processes edit one change and race (cleans up after)"
    demo = commands.add_parser("demo", help=text, description=text)
    demo.add_argument("--org", default="acme")
    demo.add_argument("--keep", action="store_true", help="keep the demo repo")
    demo.add_argument("--peer", metavar="REPO", help=argparse.SUPPRESS)
    demo.add_argument(
        "--web", action="store_true", help="serve the page too (mesa web) beside a scripted agent"
    )
    demo.add_argument("--port", type=int, default=8080, help="the page's port with --web")
    demo.add_argument("--agent", metavar="REPO", help=argparse.SUPPRESS)
    text = "serve a browser editor on live changes (loopback unless --host; docs/web.md)"
    web = commands.add_parser("web", help=text, description=text)
    web.add_argument("--org", default=None, help="the org (default: MESA_ORG)")
    web.add_argument(
        "--repo",
        action="append",
        required=True,
        metavar="NAME[@BOOKMARK|@CHANGE_ID]",
        help="a repo to serve (repeatable)",
    )
    web.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (other than loopback: every browser must present a token)",
    )
    web.add_argument("--port", type=int, default=8080)
    web.add_argument(
        "--events-kept",
        type=int,
        default=10_000,
        metavar="N",
        help="events each mount keeps for reconnecting streams (older: a snapshot event)",
    )
    text = "run or manage the embedded NATS JetStream server"
    server = commands.add_parser("server", help=text, description=text)
    _server_ports(server, argparse.SUPPRESS)
    actions = server.add_subparsers(dest="action", metavar="ACTION")
    for name, help_text in (
        ("run", "run it in the foreground (the default; Ctrl-C stops it)"),
        ("start", "start it in the background unless it runs"),
        ("status", "say whether it runs, where, and its data directory (exit 1: not running)"),
        ("stop", "stop it (warns about live mounts, which then lose their server)"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        if name == "run":
            _server_ports(action, argparse.SUPPRESS)
    from mesa.fuse._cli import add_commands  # does not import pyfuse3

    add_commands(commands)
    from mesa import _cli_repo, _cli_vcs

    _cli_repo.register(commands)
    _cli_vcs.register(commands)
    from mesa import _cli_keys, _cli_service

    _cli_keys.register(commands)
    _cli_service.register(commands)
    completion = commands.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description='print a completion script: eval "$(mesa completion bash)"',
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
    return parser


def _server_ports(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=default,
        help="client port for `run` (default: the home's recorded port, else 4222)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=default,
        help="monitoring port for `run` (default: the home's recorded one, else 8222)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (docs/cli.md lists them)."""
    parser = build_parser()
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    command = f"mesa {args.command}"
    try:
        return _dispatch(parser, args)
    except BrokenPipeError:
        # The reader went away (`mesa log | head -1`): stop quietly, as `git log` does.
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        sys.stderr.write(f"{command}: interrupted\n")
        return EXIT_INTERRUPTED
    except (MesaError, OSError, TimeoutError) as exc:
        error(command, describe(exc))
        return exit_code(exc)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from mesa import _cli_repo, _cli_vcs

    if args.command in _cli_vcs.COMMANDS:
        return _cli_vcs.run(args)
    from mesa import _cli_keys

    if args.command in _cli_keys.COMMANDS:
        return _cli_keys.run(args)
    from mesa import _cli_service

    if args.command in _cli_service.COMMANDS:
        return _cli_service.run(args)
    if args.command == "repo":
        return _cli_repo.run(args)
    if args.command in ("mount", "unmount"):
        from mesa.fuse._cli import run

        return run(args)
    if args.command == "server":
        return _server_command(
            args.action or "run", getattr(args, "port", None), getattr(args, "http_port", None)
        )
    if args.command == "completion":
        sys.stdout.write(_completion_script(args.shell))
        return 0
    if args.command == "web":
        from mesa._web_cli import run_web

        return run_web(args)
    if args.command == "demo":
        from mesa._demo import run_demo, run_peer

        if args.peer:
            return asyncio.run(run_peer(args.org, args.peer))
        if args.agent or args.web:
            from mesa._web_demo import run_agent, run_web_demo

            if args.agent:
                return asyncio.run(run_agent(args.org, args.agent))
            return asyncio.run(run_web_demo(args.org, port=args.port, keep=args.keep))
        return asyncio.run(run_demo(args.org, keep=args.keep))
    parser.error(f"unknown command {args.command}")


def _completion_script(shell: str) -> str:
    """Argcomplete's completion script for ``mesa`` in ``shell``."""
    return str(argcomplete.shell_integration.shellcode(["mesa"], shell=shell))


def _server_command(action: str, port: int | None, http_port: int | None) -> int:
    from mesa import server

    home = server.mesa_home()
    if action == "status":
        info = server.status(home)
        if info is None:
            print(f"not running (MESA_HOME={home})")
            return 1
        print(f"running: pid {info.pid}, {info.url}, monitoring {info.http_url}, MESA_HOME={home}")
        service = info.service or {}
        if service.get("ready"):
            print(
                f"service: pid {service.get('pid')} (auth callout and control), supervisor pid "
                f"{service.get('supervisor_pid')}, restarts {service.get('restarts', 0)}"
            )
            return 0
        print(
            f"service: not running (last exit {service.get('last_exit')}); new connections are "
            f"refused until it runs (`mesa server start` restarts it; see {home}/service.log)"
        )
        return 1
    if action == "stop":
        live = _live_mounts()
        if live:
            sys.stderr.write(
                f"mesa server stop: warning: {len(live)} mount(s) still use this server "
                f"({', '.join(live)}); they fail until it runs again\n"
            )
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


def _live_mounts() -> list[str]:
    """Mount points of live mount processes recorded under ``$MESA_HOME/mounts``."""
    from mesa.fuse import _registry

    return [record.mountpoint for record in _registry.live()]


if __name__ == "__main__":
    sys.exit(main())

"""``mesa service``: run the mesa service beside an existing NATS deployment.

- ``mesa service init DIR --server URL [--server URL ...]`` writes, once, what a
  deployment needs: ``DIR/service.creds`` (the service's logins and the callout issuer
  seed, 0600) and ``DIR/nats-auth.conf`` (0600: the block every nats-server of the
  deployment ``include``s, `transports.jetstream.daemon.service_config`). It refuses to
  overwrite either.
- ``mesa service run CREDENTIALS`` runs one service instance in the foreground (the
  auth callout and the control requests; several may run, they share queue groups).
- ``mesa service admin-key CREDENTIALS [--org ORG]`` registers a new admin key (of
  ``ORG``, or of every org) with the service's login and prints it once: the first key
  of a new deployment.

Exit codes as the rest of the CLI: 0 done, 1 failed, 2 bad input, 3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from mesa.errors import InvalidOptionsError, MesaConnectionError

COMMANDS = ("service",)
CREDENTIALS_FILE = "service.creds"
CONFIG_FILE = "nats-auth.conf"


def register(subparsers: Any) -> None:
    """Add ``service`` to the CLI's ``subparsers``."""
    text = "run the mesa service (auth callout and control) beside your nats-servers"
    service = subparsers.add_parser("service", help=text, description=text)
    actions = service.add_subparsers(dest="service_action", required=True, metavar="ACTION")
    text = "write service.creds and nats-auth.conf (the block each nats-server includes)"
    init = actions.add_parser("init", help=text, description=text)
    init.add_argument("dir", type=Path)
    init.add_argument(
        "--server", action="append", required=True, help="a NATS URL (repeat for a cluster)"
    )
    text = "run one service instance in the foreground (Ctrl-C stops it)"
    run_ = actions.add_parser("run", help=text, description=text)
    run_.add_argument("credentials", type=Path)
    text = "register a new admin key with the service's login and print it once"
    key = actions.add_parser("admin-key", help=text, description=text)
    key.add_argument("credentials", type=Path)
    key.add_argument("--org", default=None, help="the key's org (default: every org)")


def run(args: argparse.Namespace) -> int:
    """Run one ``mesa service`` action; return its exit code."""
    from transports.jetstream import daemon

    if args.service_action == "run":
        return daemon.main([str(args.credentials)])
    if args.service_action == "init":
        _init(args.dir, args.server)
        return 0
    sys.stdout.write(_admin_key(args.credentials, args.org) + "\n")
    return 0


def _init(directory: Path, servers: list[str]) -> None:
    from transports.jetstream.daemon import new_service

    creds, conf = directory / CREDENTIALS_FILE, directory / CONFIG_FILE
    for path in (creds, conf):
        if path.exists():
            raise InvalidOptionsError(f"{path} exists; remove it to make new secrets")
    directory.mkdir(parents=True, exist_ok=True)
    credentials, block = new_service(servers)
    for path, text in ((creds, credentials.dump()), (conf, block)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    sys.stderr.write(
        f"wrote {creds} (keep it secret: it holds the service's logins) and {conf}.\n"
        f"Copy {CONFIG_FILE} next to every nats-server config (0600), add\n"
        f'  include "{CONFIG_FILE}"\n'
        "to each (nats-server reads includes relative to the config file), restart them,\n"
        f"then run `mesa service run {creds}` beside them (more than one for availability)\n"
        f"and `mesa service admin-key {creds}` for the first key.\n"
    )


def _admin_key(credentials_path: Path, org: str | None) -> str:
    from transports.auth import ANY_ORG, KeyRecord, Keyring, generate_key
    from transports.base import TransportError, validate_org
    from transports.jetstream import JetStreamTransport
    from transports.jetstream.daemon import ServiceCredentials

    try:
        credentials = ServiceCredentials.load(str(credentials_path))
        scope = ANY_ORG if org is None else validate_org(org)
    except (OSError, ValueError) as exc:
        raise InvalidOptionsError(str(exc)) from exc
    key = generate_key()
    record = KeyRecord.for_key(key, scope, name="admin (mesa service admin-key)")

    async def register() -> None:
        urls = [
            u.replace("nats://", f"nats://{credentials.user}:{credentials.password}@", 1)
            for u in credentials.servers
        ]
        transport = await JetStreamTransport.connect(urls, keyring=Keyring())
        try:
            await transport.bootstrap_key(record)
        finally:
            await transport.aclose()

    try:
        asyncio.run(register())
    except TransportError as exc:
        raise MesaConnectionError(f"cannot register the key: {exc}") from exc
    return key

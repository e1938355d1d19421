"""Running the mesa service: its nats-server config, its credentials file, its process.

`service_config` is what a nats-server config needs so that every connection goes
through the service (`transports.jetstream.service`); `ServiceCredentials` is what a
service process needs to log in; ``python -m transports.jetstream.daemon CREDENTIALS``
runs one instance (several may run: they share queue groups). docs/operations.md shows a
cluster's setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nkeys

from transports.base import TransportError
from transports.jetstream._migrate import migrate_legacy_kv
from transports.jetstream._transport import JetStreamTransport
from transports.jetstream.callout import MAX_CONTROL_LINE_BYTES, new_issuer
from transports.jetstream.service import MesaService

__all__ = [
    "ServiceCredentials",
    "derived_issuer",
    "new_service",
    "main",
    "run_service",
    "service_config",
]


def service_config(
    issuer_public: str,
    service_user: str,
    service_password: str,
    system_user: str,
    system_password: str,
) -> str:
    """Return the nats-server config text that puts every connection behind the service.

    The service's login (in the global account, with JetStream) and a system-account
    user (``SYS``, used to kick the connections of revoked keys) bypass the callout;
    every other connection is sent to it and placed in the global account with the
    permissions it grants. ``max_control_line`` is raised so real tokens fit in a CONNECT
    line. Changing this needs a server restart (a reload refuses auth callout changes).

    Raises:
        ValueError: a name or password the config cannot hold.
    """
    for value in (service_user, service_password, system_user, system_password):
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("names and passwords must be non-empty [A-Za-z0-9_-]")
    if service_user == system_user:
        raise ValueError("the service and system users must differ")
    return f"""max_control_line: {MAX_CONTROL_LINE_BYTES}
accounts {{
  SYS: {{ users: [ {{ user: "{system_user}", password: "{system_password}" }} ] }}
}}
system_account: SYS
authorization {{
  users: [ {{ user: "{service_user}", password: "{service_password}" }} ]
  auth_callout {{
    issuer: "{issuer_public}"
    users: [ "{service_user}", "{system_user}" ]
  }}
}}
"""


def new_service(servers: Sequence[str]) -> tuple[ServiceCredentials, str]:
    """Return fresh service credentials for ``servers`` and the server config block for them.

    New random passwords and a new callout issuer; the block is `service_config`'s.
    """
    seed, public = new_issuer()
    credentials = ServiceCredentials(
        servers=tuple(servers),
        user="mesa",
        password=secrets.token_hex(24),
        system_user="mesa-sys",
        system_password=secrets.token_hex(24),
        issuer_seed=seed,
    )
    block = service_config(
        public,
        credentials.user,
        credentials.password,
        credentials.system_user,
        credentials.system_password,
    )
    return credentials, block


def derived_issuer(secret: bytes) -> tuple[str, str]:
    """Return the callout issuer (account seed, public key) made from 32 secret bytes.

    For deployments that derive every secret from one (the embedded default derives it
    from its admin key); `transports.jetstream.callout.new_issuer` makes a random one.
    """
    if len(secret) != 32:
        raise ValueError("the secret must be 32 bytes")
    seed = nkeys.encode_seed(secret, nkeys.PREFIX_BYTE_ACCOUNT)
    return seed.decode("ascii"), nkeys.from_seed(seed).public_key.decode("ascii")


@dataclass(frozen=True)
class ServiceCredentials:
    """What a service process needs (a JSON file, 0600): where and how to log in, and the issuer."""

    servers: tuple[str, ...]
    user: str
    password: str
    system_user: str
    system_password: str
    issuer_seed: str

    @classmethod
    def load(cls, path: str) -> ServiceCredentials:
        """Read the credentials file at ``path``.

        Raises:
            ValueError: the file is not such a JSON object.
        """
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        try:
            return cls(
                servers=tuple(str(s) for s in data["servers"]),
                user=str(data["user"]),
                password=str(data["password"]),
                system_user=str(data["system_user"]),
                system_password=str(data["system_password"]),
                issuer_seed=str(data["issuer_seed"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a service credentials file ({exc!r})") from exc

    def dump(self) -> str:
        """Return the credentials as the JSON `load` reads."""
        return json.dumps(
            {
                "servers": list(self.servers),
                "user": self.user,
                "password": self.password,
                "system_user": self.system_user,
                "system_password": self.system_password,
                "issuer_seed": self.issuer_seed,
            }
        )


async def run_service(credentials: ServiceCredentials, *, ready: Any = None) -> None:
    """Run one service instance until cancelled (SIGTERM/SIGINT in `main`).

    ``ready``, if given, is called once the service answers. The NATS connections
    reconnect forever; the service keeps answering after a server restart.

    Raises:
        UnavailableError: no server answered the first connect.
    """
    import nats

    from transports.auth import Keyring

    transport = await JetStreamTransport.connect(
        list(credentials.servers),
        keyring=Keyring(),
        user=credentials.user,
        password=credentials.password,
        name="mesa service",
    )
    system_nc = await nats.connect(
        servers=list(credentials.servers),
        user=credentials.system_user,
        password=credentials.system_password,
        name="mesa service (system)",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
    )
    await migrate_legacy_kv(transport._conn, transport._kv)
    service = MesaService(transport, credentials.issuer_seed, system_nc=system_nc)
    try:
        await service.start()
        if ready is not None:
            ready()
        while True:
            await asyncio.sleep(60)
            service.prune()
    finally:
        await service.aclose()
        with contextlib.suppress(Exception):
            await system_nc.close()
        await transport.aclose()


def _say(stream: Any, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m transports.jetstream.service CREDENTIALS_FILE``: run one instance.

    Prints ``ready`` on stdout once it answers; stops on SIGTERM or SIGINT (exit 0).
    Exit 1 when the first connect fails.
    """
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="run the mesa service (auth callout + control)")
    parser.add_argument("credentials", help="the service credentials file (JSON, 0600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    credentials = ServiceCredentials.load(args.credentials)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_service(credentials, ready=lambda: _say(sys.stdout, "ready"))

    try:
        asyncio.run(run())
    except TransportError as exc:
        _say(sys.stderr, f"mesa service: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

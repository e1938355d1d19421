"""A deployment as a cluster operator runs it: nats-server with the auth callout, and the service.

`start_secured` starts one JetStream nats-server whose config sends every connection to
the auth callout (`transports.jetstream.daemon.service_config`) and one mesa service
process (``python -m transports.jetstream.daemon``), registers an admin key with the
service's credentials, and returns a `SecuredDeployment`: clients of it get plain URLs
(no NATS credentials), so every connection presents a token and the server enforces it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.conftest import ROOT, Deployment, register_key
from tests.integration.natsutil import NatsServer, start_nats
from transports.auth import ANY_ORG, KeyRecord
from transports.jetstream.daemon import ServiceCredentials, new_service

SERVICE_READY_S = 30.0


@dataclass
class SecuredDeployment(Deployment):
    """A `Deployment` behind the auth callout (module docstring)."""

    server: NatsServer | None = None
    credentials: ServiceCredentials | None = None
    credentials_path: Path | None = None
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def trusted_urls(self) -> list[str]:
        """URLs with the service's own NATS login (bypasses the callout)."""
        assert self.credentials is not None
        login = f"{self.credentials.user}:{self.credentials.password}@"
        return [u.replace("nats://", f"nats://{login}", 1) for u in self.urls]

    def register_key(self) -> None:
        """Register `api_key` (admin of every org) with the service's credentials."""
        if self.credentials is None:
            return  # set up by `start_secured`, which registers it afterwards
        record = KeyRecord.for_key(self.api_key, ANY_ORG, name="test deployment")
        register_key(self.trusted_urls(), record, self.replicas)

    def client_urls(self, urls: list[str] | None = None) -> list[str]:
        """Plain URLs: clients present tokens."""
        return list(urls or self.urls)

    def start_service(self) -> subprocess.Popen[bytes]:
        """Start one more service process and return it once it prints ``ready``."""
        assert self.credentials_path is not None
        with open(self.credentials_path.parent / "service.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "transports.jetstream.daemon", str(self.credentials_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        self.services.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + SERVICE_READY_S
        line = proc.stdout.readline()
        if line.strip() != b"ready" or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the mesa service did not start: {line!r}")
        return proc

    def stop_services(self) -> None:
        """Stop every service process (new connections are refused from then on)."""
        for proc in self.services:
            proc.terminate()
        for proc in self.services:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.services.clear()


def start_secured(tmp_path: Path) -> SecuredDeployment:
    """Start the server and one service; the caller calls `stop_secured` at the end."""
    credentials, extra = new_service(())
    server = start_nats(tmp_path, sync_always=True, extra_config=extra)
    credentials = dataclasses.replace(credentials, servers=(server.url,))
    path = tmp_path / "service.creds"
    path.write_text(credentials.dump())
    path.chmod(0o600)
    deployment = SecuredDeployment(
        [server.url], server=server, credentials=credentials, credentials_path=path
    )
    try:
        deployment.register_key()
        deployment.start_service()
    except BaseException:
        stop_secured(deployment)
        raise
    return deployment


def stop_secured(deployment: SecuredDeployment) -> None:
    """Stop the services and kill the server."""
    deployment.stop_services()
    if deployment.server is not None:
        deployment.server.kill()

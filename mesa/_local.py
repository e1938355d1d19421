"""Which transport a client uses when it is given none, and connecting it lazily.

- ``MESA_NATS_URL=nats://a,nats://b`` — an existing NATS deployment with the mesa
  service beside it (``MESA_REPLICAS`` sets stream replicas); the client's API key or
  token (``api_key=`` or ``MESA_API_KEY``) is required, and every connection presents a
  token the deployment's auth callout checks. With NATS credentials in the URL
  (``nats://user:password@host``) the client is trusted instead: one connection with
  those credentials, tokens checked in this process (docs/operations.md).
- ``MESA_NATS_URL=memory://`` — an in-process memory transport shared by the clients
  of this process only (no persistence; for trying things out and for tests).
- unset — the embedded default: the host's local nats-server (mesa/server.py), started
  on first use; without a key the client uses the server's admin key. The server keeps
  its address across restarts (``$MESA_HOME/ports.json``), so a client connected once
  reconnects to it by itself after ``mesa server stop`` + ``start``. A connected client
  does not start a stopped server again (``stop`` asked for it to be down); only a new
  connection (the first use in another event loop) does.

A client is built synchronously but a NATS connection is made inside an event loop, so
the transport here connects on first use, once per event loop, and every client of the
process that points at the same servers shares that transport (one connection per
token it is handed, or the one trusted connection).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from mesa import server
from mesa.errors import InvalidOptionsError, MesaConnectionError, MissingCredentialError
from transports.auth import ANY_ORG, Keyring, generate_key
from transports.base import (
    MAX_BLOB_BYTES,
    Appended,
    BlobStream,
    Buffer,
    ByteChunks,
    KvEntry,
    LogId,
    Subscription,
    SystemClock,
    Transport,
    UnavailableError,
)
from transports.keys import KeyRecord
from transports.memory import MemoryTransport

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


class LazyTransport:
    """A `Transport` that connects on first use, once per event loop (see module docstring)."""

    def __init__(
        self, keyring: Keyring, connect: Callable[[Keyring], Coroutine[Any, Any, Transport]]
    ) -> None:
        self.keyring = keyring
        self._connect = connect
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Transport]]
        self._by_loop = weakref.WeakKeyDictionary()
        self.max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
        self.max_blob_bytes = MAX_BLOB_BYTES

    async def get(self) -> Transport:
        """Return this loop's connected transport, connecting if needed."""
        loop = asyncio.get_running_loop()
        task = self._by_loop.get(loop)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = loop.create_task(self._connect(self.keyring))
            self._by_loop[loop] = task
        try:
            transport = await asyncio.shield(task)
        except UnavailableError as exc:
            raise MesaConnectionError(str(exc)) from exc
        self.max_payload_bytes = transport.max_payload_bytes
        self.max_blob_bytes = transport.max_blob_bytes
        return transport

    async def append(self, token: str, log: LogId, payload: bytes, *, msg_id: str) -> Appended:
        """See `Transport.append`."""
        return await (await self.get()).append(token, log, payload, msg_id=msg_id)

    async def last_seq(self, token: str, log: LogId) -> int:
        """See `Transport.last_seq`."""
        return await (await self.get()).last_seq(token, log)

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> Subscription:
        """See `Transport.subscribe`."""
        return await (await self.get()).subscribe(token, log, after_seq=after_seq)

    async def put_blob(self, token: str, org: str, repo: str, data: Buffer) -> str:
        """See `Transport.put_blob`."""
        return await (await self.get()).put_blob(token, org, repo, data)

    async def put_blob_chunks(self, token: str, org: str, repo: str, chunks: ByteChunks) -> str:
        """See `Transport.put_blob_chunks`."""
        return await (await self.get()).put_blob_chunks(token, org, repo, chunks)

    async def get_blob(self, token: str, org: str, repo: str, digest: str) -> bytes:
        """See `Transport.get_blob`."""
        return await (await self.get()).get_blob(token, org, repo, digest)

    async def get_blob_chunks(self, token: str, org: str, repo: str, digest: str) -> BlobStream:
        """See `Transport.get_blob_chunks`."""
        return await (await self.get()).get_blob_chunks(token, org, repo, digest)

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """See `Transport.kv_get`."""
        return await (await self.get()).kv_get(token, key)

    async def kv_put(
        self, token: str, key: str, value: bytes, *, expected_revision: int | None = None
    ) -> int:
        """See `Transport.kv_put`."""
        return await (await self.get()).kv_put(
            token, key, value, expected_revision=expected_revision
        )

    async def kv_delete(
        self, token: str, key: str, *, expected_revision: int | None = None
    ) -> None:
        """See `Transport.kv_delete`."""
        await (await self.get()).kv_delete(token, key, expected_revision=expected_revision)

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """See `Transport.kv_keys`."""
        return await (await self.get()).kv_keys(token, prefix)

    async def put_key(self, token: str, record: KeyRecord) -> None:
        """See `Transport.put_key`."""
        await (await self.get()).put_key(token, record)

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """See `Transport.list_keys`."""
        return await (await self.get()).list_keys(token, org)

    async def revoke_key(self, token: str, org: str, key_id: str) -> None:
        """See `Transport.revoke_key`."""
        await (await self.get()).revoke_key(token, org, key_id)

    async def delete_repo_storage(self, token: str, org: str, repo: str) -> None:
        """See `Transport.delete_repo_storage`."""
        await (await self.get()).delete_repo_storage(token, org, repo)

    async def aclose(self) -> None:
        """Close this loop's connection (others close with their loops)."""
        task = self._by_loop.pop(asyncio.get_running_loop(), None)
        if task is not None and task.done() and not task.cancelled() and task.exception() is None:
            await task.result().aclose()


_shared: dict[tuple[Any, ...], tuple[Transport, Keyring, str | None]] = {}


def default_transport(org: str, api_key: str | None) -> tuple[Transport, str]:
    """Return the transport and the API key a client without a transport uses."""
    url = os.environ.get("MESA_NATS_URL", "").strip()
    if url == "memory://":
        transport, _, admin = _memory()
        key = api_key or admin
    elif url:
        if not api_key:
            raise MissingCredentialError("MESA_NATS_URL is set: pass api_key= or set MESA_API_KEY")
        transport, _, _ = _remote(url)
        key = api_key
    else:
        home = server.mesa_home()
        admin = server.admin_key(home)
        transport, _, _ = _embedded(home, admin)
        key = api_key or admin
    if not key:
        raise MissingCredentialError("no API key: pass api_key= or set MESA_API_KEY")
    # The key is not added to any keyring: only keys the server knows are accepted.
    return transport, key


def _memory() -> tuple[Transport, Keyring, str | None]:
    cached = _shared.get(("memory",))
    if cached is None:
        admin = generate_key()
        keyring = Keyring()
        keyring.add(admin, ANY_ORG)
        cached = (MemoryTransport(keyring, SystemClock()), keyring, admin)
        _shared[("memory",)] = cached
    return cached


def _replicas() -> int:
    raw = os.environ.get("MESA_REPLICAS", "1")
    try:
        replicas = int(raw)
    except ValueError:
        raise InvalidOptionsError(f"MESA_REPLICAS must be an int, not {raw!r}") from None
    if not 1 <= replicas <= 5:
        raise InvalidOptionsError(f"MESA_REPLICAS must be in 1..5, not {replicas}")
    return replicas


def _remote(url: str) -> tuple[Transport, Keyring, str | None]:
    servers = tuple(part.strip() for part in url.split(",") if part.strip())
    replicas = _replicas()
    key = ("nats", servers, replicas)
    cached = _shared.get(key)
    if cached is None:

        async def connect(keyring: Keyring) -> Transport:
            from transports.jetstream import JetStreamTransport

            return await JetStreamTransport.connect(
                list(servers), keyring=keyring, replicas=replicas, present_tokens=not trusted
            )

        # NATS credentials in the URL (nats://user:password@host) make a trusted client,
        # which checks tokens itself (a backend holding the service's login); without
        # them every connection presents its token to the deployment's auth callout.
        trusted = any(urlsplit(s if "://" in s else f"nats://{s}").username for s in servers)

        keyring = Keyring()
        cached = (LazyTransport(keyring, connect), keyring, None)
        _shared[key] = cached
    return cached


def _embedded(home: Any, admin: str) -> tuple[Transport, Keyring, str | None]:
    key = ("embedded", str(home))
    cached = _shared.get(key)
    if cached is None:

        async def connect(keyring: Keyring) -> Transport:
            from transports.jetstream import JetStreamTransport

            try:
                info = await asyncio.to_thread(server.ensure_running, home)
            except MesaConnectionError:
                raise  # already says what (a taken port names it and the home)
            except OSError as exc:
                raise MesaConnectionError(f"cannot start the local server: {exc}") from exc
            # Every connection presents its token: the local server's auth callout, not
            # this process, decides what it may do.
            return await JetStreamTransport.connect(
                [info.url], keyring=keyring, present_tokens=True
            )

        keyring = Keyring()
        keyring.add(admin, ANY_ORG)
        cached = (LazyTransport(keyring, connect), keyring, admin)
        _shared[key] = cached
    return cached

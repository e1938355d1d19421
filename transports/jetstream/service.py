"""The mesa service: the NATS auth callout and the control requests, beside nats-server.

nats-server (config mode, `service_config`) sends every new connection to the auth
callout; the service verifies the token the client presents as its NATS connect token
(signature, key known and not revoked, not expired: `transports.auth`, the one copy of
these checks) and answers with a user JWT whose permissions reach only the token's
repos (`_grants`) and whose expiry is the token's (or its key's, if sooner). The same
process answers the control requests of token-mode clients (`_control`): what a
token's connection may not do itself (provision or delete a repo's storage, read or
write API key records). Revoking a key kicks the connections of its tokens
(``$SYS.REQ.SERVER.<id>.KICK``, through a system-account connection) on every service
instance, which learn of it on `REVOKED_SUBJECT`.

Run several for availability: they share the queue groups, so each request is answered
once; while none runs, new connections (and reconnects) are refused and control
requests fail with `UnavailableError`, but open connections keep working.

Invariants:

- Nothing a client sends can stop the service: every request is handled in its own
  task, errors become refusals (callout) or error replies (control), and both are
  logged without the token.
- The service holds the only credentials that create or delete streams and read key
  records; a token's connection never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

from transports.auth import (
    ALL_REPOS,
    WRITE,
    Claims,
    KeyRecord,
    check,
    check_admin,
)
from transports.base import (
    TokenRejectedError,
    TransportError,
    validate_org,
    validate_repo,
)
from transports.jetstream._control import (
    OPERATIONS,
    claims_to_json,
    control_subject,
    encode_error,
    encode_reply,
)
from transports.jetstream._grants import permissions
from transports.jetstream._names import REVOKED_NOTICE, inbox_prefix, index_bucket
from transports.jetstream._provision import create_repo_storage, delete_repo_storage
from transports.jetstream._transport import JetStreamTransport
from transports.jetstream.callout import (
    AuthRequest,
    CalloutService,
    Denied,
    Grant,
)

__all__ = [
    "REVOKED_SUBJECT",
    "MesaService",
    "ServiceStats",
]

#: Where service instances tell each other that a key was revoked (service users only).
REVOKED_SUBJECT: Final = "mesa.svc.revoked"
_QUEUE: Final = "mesa-service"
_KICK_TIMEOUT_S: Final = 2.0

_logger = logging.getLogger("transports.jetstream.service")


@dataclass
class ServiceStats:
    """Counters of one service instance (for `mesa server status` and tests)."""

    granted: int = 0
    refused: int = 0
    control_ok: int = 0
    control_failed: int = 0
    kicked: int = 0
    started_at: float = field(default_factory=time.time)


class MesaService:
    """The auth callout and the control requests over one trusted transport.

    Args:
        transport: a trusted `JetStreamTransport` (connected with the service's NATS
            credentials, which bypass the callout).
        issuer_seed: the callout issuer's account seed (``SA...``).
        account: the account the connections are placed in.
        system_nc: a nats-py connection of a system-account user, used to kick the
            connections of a revoked key; None: revocation only refuses new ones.
    """

    def __init__(
        self,
        transport: JetStreamTransport,
        issuer_seed: str,
        *,
        account: str = "$G",
        system_nc: Any = None,
    ) -> None:
        self._transport = transport
        self._nc = transport._conn.nc
        self._account = account
        self._system_nc = system_nc
        self._callout = CalloutService(self._nc, issuer_seed, self.authorize)
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # key id -> {(server id, client id): (expiry (s), inbox prefix)} of the
        # connections granted here.
        self._connections: dict[str, dict[tuple[str, int], tuple[float, str]]] = {}
        self.stats = ServiceStats()

    async def start(self) -> None:
        """Start answering (callout, control, revocations) and flush the subscriptions."""
        await self._callout.start()
        for op in OPERATIONS:
            self._subs.append(
                await self._nc.subscribe(control_subject(op), queue=_QUEUE, cb=self._on_control)
            )
        self._subs.append(await self._nc.subscribe(REVOKED_SUBJECT, cb=self._on_revoked))
        await self._nc.flush()

    async def aclose(self) -> None:
        """Stop answering (the connections stay open: they are the caller's)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        await self._callout.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the auth callout -----------------------------------------------------

    async def _verify(self, token: str) -> Claims:
        """Return the token's claims, clamped to its key's current record.

        Raises:
            TokenRejectedError: malformed, forged, expired, or its key is unknown,
                revoked or expired.
        """
        await self._transport._keys.refresh(token)
        return self._transport._keyring.verify(token, self._transport._clock.now_ms())

    async def authorize(self, request: AuthRequest) -> Grant:
        """Return what the connection presenting ``request.token`` may do (or `Denied`)."""
        if not request.token:
            self.stats.refused += 1
            raise Denied("no token presented")
        try:
            claims = await self._verify(request.token)
        except TokenRejectedError as exc:
            self.stats.refused += 1
            raise Denied(str(exc)) from None
        org_wide = ALL_REPOS in claims.repos
        repos = await self._repos_of(claims)
        granted = permissions(
            claims.org,
            repos,
            inbox_prefix(request.token),
            may_write=WRITE in claims.scopes,
            org_wide=org_wide,
        )
        expires = claims.exp
        record = self._transport._keyring.get(claims.key_id)
        if record is not None and record.expires_at is not None:
            expires = min(expires, record.expires_at)
        if request.client_id is not None:
            self._connections.setdefault(claims.key_id, {})[
                (request.server_id, request.client_id)
            ] = (expires, inbox_prefix(request.token))
        self.stats.granted += 1
        return Grant(
            name=f"mesa {claims.org} {claims.key_id} {claims.mount_id}"[:200],
            pub_allow=granted.pub_allow,
            sub_allow=granted.sub_allow,
            expires_at_s=expires,
            account=self._account,
            tags=(f"key:{claims.key_id}",),
        )

    async def _repos_of(self, claims: Claims) -> dict[str, str]:
        """Return the repos a connection of ``claims`` reaches: named, or the org's now."""
        repos = dict(claims.repos)
        if ALL_REPOS in repos:
            access = repos.pop(ALL_REPOS)
            for repo in await self._transport._kv.live_keys(index_bucket(claims.org), ">"):
                repos.setdefault(repo, access)
        return repos

    # -- control requests -----------------------------------------------------

    async def _on_control(self, msg: Any) -> None:
        task = asyncio.ensure_future(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Any) -> None:
        op = str(msg.subject).rsplit(".", 1)[-1]
        try:
            body = json.loads(msg.data)
            if not isinstance(body, dict) or not isinstance(body.get("token"), str):
                raise ValueError("a control request is a JSON object with a token")
            reply = encode_reply(await self._control(op, body["token"], body))
            self.stats.control_ok += 1
        except (TransportError, ValueError) as exc:
            self.stats.control_failed += 1
            _logger.info("control %s refused: %s", op, exc)
            reply = encode_error(exc)
        except Exception as exc:
            self.stats.control_failed += 1
            _logger.exception("control %s failed", op)
            reply = encode_error(exc)
        if msg.reply:
            with contextlib.suppress(Exception):
                await self._nc.publish(msg.reply, reply)

    async def _control(self, op: str, token: str, body: dict[str, Any]) -> Any:
        claims = await self._verify(token)
        conn = self._transport._conn
        if op == "whoami":
            return {**claims_to_json(claims), "granted": sorted(await self._repos_of(claims))}
        if op == "provision":
            # Any grant of the repo: the service alone chooses the storage's config, and
            # a subscription of a read-only token may be the first use of a repo.
            org, repo = validate_org(str(body.get("org"))), validate_repo(str(body.get("repo")))
            check(claims, org, repo, write=False)
            await create_repo_storage(conn, org, repo)
            return None
        if op == "delete_repo":
            org, repo = validate_org(str(body.get("org"))), validate_repo(str(body.get("repo")))
            check_admin(claims, org)
            await delete_repo_storage(conn, org, repo)
            return None
        keys = self._transport._keys
        limit = self._transport.max_payload_bytes
        if op == "put_key":
            await keys.create(token, KeyRecord.decode(str(body.get("record")).encode()), limit)
            return None
        if op == "list_keys":
            records = await keys.list(token, validate_org(str(body.get("org"))))
            return [record.encode().decode() for record in records]
        if op == "revoke_key":
            org, key_id = validate_org(str(body.get("org"))), str(body.get("key_id"))
            await keys.revoke(token, org, key_id, limit)
            await self._nc.publish(REVOKED_SUBJECT, json.dumps({"key_id": key_id}).encode())
            return None
        raise ValueError(f"unknown control operation {op!r}")

    # -- revocation -----------------------------------------------------------

    async def _on_revoked(self, msg: Any) -> None:
        try:
            key_id = str(json.loads(msg.data)["key_id"])
        except (ValueError, KeyError, TypeError):
            return
        task = asyncio.ensure_future(self._kick_quietly(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _kick_quietly(self, key_id: str) -> None:
        try:
            await self.kick(key_id)
        except Exception:
            _logger.exception("kicking the connections of revoked key %s failed", key_id)

    async def kick(self, key_id: str) -> int:
        """Close the connections this instance granted to tokens of ``key_id``; return how many."""
        await self._transport._keys.refresh_id(key_id, force=True)
        now = time.time()
        granted = self._connections.pop(key_id, {})
        live = [(where, inbox) for where, (expires, inbox) in granted.items() if expires > now]
        # Tell each connection why first (`REVOKED_NOTICE`), so its client fails with
        # "revoked" at once instead of retrying a refused reconnect.
        for _, inbox in live:
            with contextlib.suppress(Exception):
                await self._nc.publish(f"{inbox}.{REVOKED_NOTICE}", b"key revoked")
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=_KICK_TIMEOUT_S)
        if self._system_nc is None:
            if live:
                _logger.warning(
                    "key %s revoked: %d open connections stay until their tokens expire "
                    "(no system account to kick them)",
                    key_id,
                    len(live),
                )
            return 0
        kicked = 0
        for (server_id, cid), _ in live:
            try:
                await self._system_nc.request(
                    f"$SYS.REQ.SERVER.{server_id}.KICK",
                    json.dumps({"cid": cid}).encode(),
                    timeout=_KICK_TIMEOUT_S,
                )
                kicked += 1
            except Exception as exc:  # a connection already gone, a server away
                _logger.info("kick of %s/%d failed: %r", server_id, cid, exc)
        self.stats.kicked += kicked
        return kicked

    def prune(self) -> None:
        """Forget connections whose tokens expired (the server closed them)."""
        now = time.time()
        for key_id in list(self._connections):
            live = {k: v for k, v in self._connections[key_id].items() if v[0] > now}
            if live:
                self._connections[key_id] = live
            else:
                del self._connections[key_id]

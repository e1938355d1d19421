"""Sessions: one NATS connection and the concerns over it; one per token in token mode.

Invariants:

- A **trusted** transport (given NATS credentials: the service, or a backend an operator
  trusts) has one session; it checks tokens itself against the key records
  (`transports.jetstream._keys`) and provisions storage directly.
- A **token-mode** transport opens one session per token it is handed: the connection
  presents the token as its NATS connect token and takes its inbox prefix from it
  (`inbox_prefix`), so the server's auth callout decides what it may reach and nothing
  depends on this process for safety. The session then asks the service what the
  token really grants (``whoami``: verified, clamped to its key), so a call outside
  that grant fails here with the same error the memory transport gives, before the
  server would refuse it. Storage and keys go through the service (`_control`).
- Sessions of tokens that expired are closed (the server ends them at expiry anyway);
  at most `MAX_SESSIONS` are open, the least recently used closed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from transports.auth import ALL_REPOS, Claims, check, unverified_claims
from transports.base import PermissionDeniedError, TokenRejectedError, UnavailableError
from transports.jetstream._blobs import _Blobs
from transports.jetstream._connection import _Connection
from transports.jetstream._control import call, claims_from_json
from transports.jetstream._kv import _Kv
from transports.jetstream._log import _Log
from transports.jetstream._names import REVOKED_NOTICE, inbox_prefix, index_bucket
from transports.jetstream._provision import _Provision

#: The most token sessions a transport keeps open.
MAX_SESSIONS: Final = 256
#: The least time between two renewals of one token's session (seconds).
_RENEW_EVERY_S: Final = 1.0


class _Session:
    """One connection and its logs, blobs and KV (see module docstring).

    Args:
        replicas: ``num_replicas`` of what it provisions.
        request_timeout_s: the most one request may take.
        token: the token the connection presents, or None for a trusted session.
    """

    def __init__(self, *, replicas: int, request_timeout_s: float, token: str | None) -> None:
        self.conn = _Connection(replicas=replicas, request_timeout_s=request_timeout_s)
        self.token = token
        remote = None if token is None else self._provision_remote
        self.provision = _Provision(self.conn, remote)
        self.log = _Log(self.conn, self.provision)
        self.blobs = _Blobs(self.conn, self.provision)
        self.kv = _Kv(self.conn, self.provision)
        self.claims: Claims | None = None
        # The repos the callout let this connection reach (``whoami``), and whether
        # they are "every repo of the org when it connected".
        self.granted: frozenset[str] = frozenset()
        self.org_wide = False
        self.opened_at = time.monotonic()

    async def on_revoked(self, _msg: object) -> None:
        """The service says this token's key was revoked: fail every call from now on."""
        self.conn.reject("the key of this token was revoked")

    async def _provision_remote(self, org: str, repo: str) -> None:
        assert self.token is not None
        await call(self.conn, "provision", self.token, org=org, repo=repo)

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        await self.conn.aclose()


def live_claims(session: _Session, now_ms: int) -> Claims:
    """Return what the service said the session's token grants, unless it expired.

    Raises:
        TokenRejectedError: the token expired.
    """
    claims = session.claims
    assert claims is not None
    if now_ms >= claims.exp * 1000:
        raise TokenRejectedError("token expired")
    return claims


def _may_write(claims: Claims, org: str, repo: str) -> bool:
    try:
        check(claims, org, repo, write=True)
    except PermissionDeniedError:
        return False
    return True


class _TokenSessions:
    """The sessions of a token-mode transport, opened on first use of each token."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        replicas: int,
        connect_timeout_s: float,
        request_timeout_s: float,
        name: str,
    ) -> None:
        self._servers = list(servers)
        self._replicas = replicas
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._name = name
        self._sessions: OrderedDict[str, asyncio.Task[_Session]] = OrderedDict()
        self._retired: list[_Session] = []
        self.closed = False
        self.payload_limit: int | None = None

    async def get(self, token: str) -> _Session:
        """Return the open session of ``token``, connecting (and asking ``whoami``) first.

        Raises:
            TokenRejectedError: the token is malformed, expired, or the server refused it.
            UnavailableError: no server (or no service) answered in time, or closed.
        """
        if self.closed:
            raise UnavailableError("the transport is closed")
        if not isinstance(token, str):
            raise TokenRejectedError("a token must be a string")
        await self._reap()
        task = self._sessions.get(token)
        if task is not None and task.done():
            failed = task.cancelled() or task.exception() is not None
            if failed or task.result().conn.nc.is_closed or task.result().conn.rejected:
                if not failed:
                    await task.result().aclose()
                del self._sessions[token]
                task = None
        if task is None:
            task = asyncio.ensure_future(self._open(token))
            self._sessions[token] = task
        self._sessions.move_to_end(token)
        session = await asyncio.shield(task)
        while len(self._sessions) > MAX_SESSIONS:
            _, oldest = self._sessions.popitem(last=False)
            if oldest.done() and not oldest.cancelled() and oldest.exception() is None:
                await oldest.result().aclose()
        return session

    async def _open(self, token: str) -> _Session:
        given = unverified_claims(token)  # TokenRejectedError when it is no token
        if given.exp <= time.time():
            raise TokenRejectedError("token expired")
        session = _Session(
            replicas=self._replicas, request_timeout_s=self._request_timeout_s, token=token
        )
        session.conn.expires_at_s = given.exp
        try:
            await session.conn.connect(
                self._servers,
                self._connect_timeout_s,
                name=f"{self._name} {given.org} {given.mount_id}"[:128],
                token=token,
                inbox_prefix=inbox_prefix(token),
            )
            await session.conn.nc.subscribe(
                f"{inbox_prefix(token)}.{REVOKED_NOTICE}", cb=session.on_revoked
            )
            reply = await call(session.conn, "whoami", token)
            session.claims = claims_from_json(reply)
            session.granted = frozenset(str(r) for r in reply.get("granted", ()))
            session.org_wide = ALL_REPOS in session.claims.repos
        except BaseException:
            await session.aclose()
            raise
        limit = session.conn.payload_limit()
        self.payload_limit = limit if self.payload_limit is None else min(limit, self.payload_limit)
        return session

    async def authorize(
        self,
        token: str,
        org: str,
        repo: str,
        *,
        write: bool,
        provision: bool | None,
        now_ms: int,
    ) -> _Session:
        """Check a call of ``token`` on ``org/repo`` and return the session to make it on.

        An org-wide token's connection reaches the repos that existed when it opened; a
        call on another repo creates it first if the call writes (or ``provision``
        says so) and the token may write, then takes a connection whose grant lists it
        (`renew`).

        Raises:
            TokenRejectedError: the token is malformed, expired or refused.
            PermissionDeniedError: the token does not grant the call.
            UnavailableError: no server or service answered in time.
        """
        session = await self.get(token)
        claims = live_claims(session, now_ms)
        check(claims, org, repo, write=write)
        if session.org_wide and repo not in session.granted:
            create = (write if provision is None else provision) and _may_write(claims, org, repo)
            if create:
                await call(session.conn, "provision", token, org=org, repo=repo)
            session = await self.renew(token, force=create)
        return session

    async def for_listing(
        self, token: str, now_ms: int
    ) -> tuple[_Session, Claims, frozenset[str] | None]:
        """Return the session, claims and reachable repos (None: as granted) for a listing.

        An org-wide session whose org has repos its grant predates is renewed first.
        """
        session = await self.get(token)
        claims = live_claims(session, now_ms)
        if not session.org_wide:
            return session, claims, None
        await session.conn.ready("list the repos of the org")
        if set(await session.kv.live_keys(index_bucket(claims.org), ">")) - session.granted:
            session = await self.renew(token)
        return session, claims, session.granted

    async def renew(self, token: str, *, force: bool = False) -> _Session:
        """Return a new session of ``token`` (an org-wide token: a repo was created since).

        The callout lists an org's repos when a connection opens, so reaching a repo made
        later takes a new connection. The old one stays open for the subscriptions made
        on it and is closed once it has none (or its token expired). Unless ``force``d
        (a repo was just created), at most one renewal a second per token: a read of a
        repo that does not exist does not open a connection each time.
        """
        task = self._sessions.get(token)
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            old = task.result()
            if not force and time.monotonic() - old.opened_at < _RENEW_EVERY_S:
                return old
            del self._sessions[token]
            self._retired.append(old)
        return await self.get(token)

    async def _reap(self) -> None:
        """Close the sessions of tokens that expired (the server closed them already)."""
        now = time.time()
        for old in list(self._retired):
            if not old.conn.subscriptions or (old.claims is not None and old.claims.exp <= now):
                self._retired.remove(old)
                await old.aclose()
        for token, task in list(self._sessions.items()):
            if not task.done() or task.cancelled() or task.exception() is not None:
                continue
            claims = task.result().claims
            if claims is not None and claims.exp <= now:
                del self._sessions[token]
                await task.result().aclose()

    def open_sessions(self) -> list[_Session]:
        """Return the sessions connected now."""
        return [
            task.result()
            for task in self._sessions.values()
            if task.done() and not task.cancelled() and task.exception() is None
        ]

    async def aclose(self) -> None:
        """Close every session (idempotent)."""
        self.closed = True
        tasks = list(self._sessions.values())
        self._sessions.clear()
        for old in self._retired:
            await old.aclose()
        self._retired.clear()
        for task in tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await (await task).aclose()

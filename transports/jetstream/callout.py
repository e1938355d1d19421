"""The NATS auth callout service: nats-server asks it, for every new connection, what to allow.

nats-server (config mode, no operator; see `callout_config`) sends each connecting client's
CONNECT options to ``$SYS.REQ.USER.AUTH`` as an *authorization request*: a JWT signed by the
server's own ``N...`` key. `CalloutService` verifies that JWT, passes what it learned as an
`AuthRequest` to an `Authorizer` (the application's policy: look the token up, check it,
decide), and answers with an *authorization response* JWT signed by the callout issuer
(an account nkey, `new_issuer`). The response carries a NATS *user JWT* built from the
authorizer's `Grant`: the connection's name, its publish/subscribe allow and deny lists, its
account and its expiry. The server then enforces those permissions on the connection and
closes it at the expiry (the client sees ``-ERR 'User Authentication Expired'``).

Invariants:

- The service never dies on input. A request that is not a well-formed, correctly signed,
  unexpired authorization request addressed to this issuer is answered with an empty reply
  (the server's "deny"); an authorizer that raises `Denied`, raises anything else, or does
  not answer in time gets an error response. Each request runs in its own task, at most
  ``max_concurrency`` at once; beyond that a request is refused at once, not queued (the
  server waits only ``auth_timeout``, 2 s by default, for an answer).
- A `Grant`'s allow lists are exhaustive: an empty ``pub_allow`` means "publish nothing"
  (NATS itself reads a missing allow list as "everything", so it is encoded as a deny of
  ``>``). Every issued user JWT also denies ``$SYS.>`` for publish and subscribe: in config
  mode the authorization requests, which carry every connecting client's token, travel in
  the callout account on ``$SYS.REQ.USER.AUTH`` (and the user JWTs back on
  ``$SYS._INBOX...``), and a client subscribed to ``>`` in that account would otherwise read
  them. `callout_config` gives static bypass users the same deny, or puts the service in an
  account of its own.
- Tokens and passwords are never logged, and are removed from any exception text that is
  logged or sent to the server.
- The NATS JWTs (verifying requests, signing responses) are in `_calloutjwt`: nkeys signs,
  the base64url/JSON framing is written by hand because no kept library does it.

Server configuration: the CONNECT line, which holds the token, is capped by
``max_control_line`` (4096 bytes by default); `callout_config` raises it to
`MAX_CONTROL_LINE_BYTES` so tokens up to ``max_token_bytes`` (16 KiB by default) reach the
service. A longer CONNECT line is refused by the server itself
(``-ERR 'Maximum Control Line Exceeded'``) before any callout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nkeys

from transports.jetstream._calloutconfig import (
    MAX_CONTROL_LINE_BYTES,
    callout_config,
    new_issuer,
)
from transports.jetstream._calloutjwt import (
    AuthRequest,
    BadRequestError,
    encode_jwt,
    parse_request,
)

__all__ = [
    "AUTH_CALLOUT_SUBJECT",
    "MAX_CONTROL_LINE_BYTES",
    "AuthRequest",
    "Authorizer",
    "CalloutService",
    "Denied",
    "Grant",
    "callout_config",
    "new_issuer",
]

#: The subject nats-server sends authorization requests to.
AUTH_CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"

_SYS_SUBJECTS = "$SYS.>"
# A subject or a user name in a user JWT: printable, no whitespace.
_SUBJECT = re.compile(r"[!-~]+")
# The authorizer gets until the request's own deadline plus this (the server's clock and ours
# may differ by a little); an answer after the server gave up is wasted.
_DEADLINE_SLACK_S = 1.0
# aclose waits this long for requests in flight before cancelling them.
_CLOSE_GRACE_S = 2.0


@dataclass(frozen=True, kw_only=True)
class Grant:
    """What an authorizer lets a connection do.

    Attributes:
        name: the user name shown in connz (``authorized_user``).
        pub_allow: subjects (wildcards allowed) the connection may publish to; empty: none.
        pub_deny: subjects it may not publish to, even if allowed.
        sub_allow: subjects it may subscribe to; empty: none.
        sub_deny: subjects it may not subscribe to (nor receive through a wildcard).
        expires_at_s: the user JWT's exp, seconds since the epoch; the server closes the
            connection then. None: no expiry.
        account: the account the connection is placed in (config mode: its name).
        tags: written into the user JWT's ``nats.tags`` (e.g. a key id).
    """

    name: str
    pub_allow: tuple[str, ...]
    pub_deny: tuple[str, ...] = ()
    sub_allow: tuple[str, ...]
    sub_deny: tuple[str, ...] = ()
    expires_at_s: int | None
    account: str = "$G"
    tags: tuple[str, ...] = ()


class Denied(Exception):  # noqa: N818 (the name is the interface)
    """Raised by an authorizer to refuse a connection; the reason is logged, never shown to it."""


#: The application's policy: a `Grant` for an `AuthRequest`, or `Denied`.
Authorizer = Callable[[AuthRequest], Awaitable[Grant]]


class CalloutService:
    """Answers nats-server's authorization requests with the authorizer's grants.

    Run several (on several connections, one queue group) so new connections do not depend on
    one process. The connection ``nc`` belongs to the caller: it must log in as a user that
    bypasses the callout, and stays open after `aclose`.

    Attributes:
        served: requests answered with a user JWT.
        denied: requests refused by the authorizer (`Denied`), or refused here because the
            token or password is longer than ``max_token_bytes`` or the grant had expired.
        errors: requests that could not be verified, authorizer failures (another exception,
            or no answer by the request's deadline), refusals because ``max_concurrency``
            requests were in flight, invalid grants, and replies that could not be sent.
    """

    def __init__(
        self,
        nc: Any,
        issuer_seed: str,
        authorizer: Authorizer,
        *,
        queue: str = "mesa-callout",
        max_token_bytes: int = 16384,
        max_concurrency: int = 64,
        logger: logging.Logger | None = None,
    ) -> None:
        """Prepare the service (nothing is subscribed before `start`).

        Raises:
            ValueError: ``issuer_seed`` is not an account seed (``SA...``), or a limit is
                not positive.
        """
        try:
            prefix, _ = nkeys.decode_seed(issuer_seed.encode("ascii"))
            keypair = nkeys.from_seed(issuer_seed.encode("ascii"))
        except (nkeys.NkeysError, UnicodeError, ValueError) as exc:
            raise ValueError("issuer_seed is not an nkey seed") from exc
        if prefix != nkeys.PREFIX_BYTE_ACCOUNT:
            raise ValueError("issuer_seed must be an account seed (SA...)")
        if max_token_bytes <= 0 or max_concurrency <= 0:
            raise ValueError("max_token_bytes and max_concurrency must be positive")
        self._nc = nc
        self._keypair = keypair
        self.issuer_public: str = keypair.public_key.decode("ascii")
        self._authorizer = authorizer
        self._queue = queue
        self._max_token_bytes = max_token_bytes
        self._max_concurrency = max_concurrency
        self._log = logger or logging.getLogger("transports.jetstream.callout")
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0
        self.denied = 0
        self.errors = 0

    async def start(self) -> None:
        """Subscribe to `AUTH_CALLOUT_SUBJECT` in the queue group and flush.

        Raises:
            RuntimeError: already started.
        """
        if self._sub is not None:
            raise RuntimeError("the callout service is already started")
        self._sub = await self._nc.subscribe(
            AUTH_CALLOUT_SUBJECT, queue=self._queue, cb=self._on_message
        )
        # The server must know the subscription before a client counts on it.
        await self._nc.flush()

    async def aclose(self) -> None:
        """Stop taking requests; let those in flight finish briefly, then cancel them."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=_CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> CalloutService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _on_message(self, msg: Any) -> None:
        # nats-py runs a subscription's callbacks one after another: hand the work to a task
        # so a slow authorizer holds up only its own request.
        if not msg.reply:
            self.errors += 1
            self._log.warning("auth callout: request without a reply subject dropped")
            return
        if len(self._tasks) >= self._max_concurrency:
            self.errors += 1
            self._log.warning("auth callout: %d requests in flight, refusing one", len(self._tasks))
            task = asyncio.create_task(self._reply(msg.reply, b""))
        else:
            task = asyncio.create_task(self._handle_guarded(msg.data, msg.reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_guarded(self, data: bytes, reply: str) -> None:
        try:
            await self._handle(data, reply)
        except Exception:
            # A bug here must neither end the task unnoticed nor leave the server waiting.
            self.errors += 1
            self._log.exception("auth callout: request handling failed")
            await self._reply(reply, b"")

    async def _handle(self, data: bytes, reply: str) -> None:
        try:
            request, deadline_s = parse_request(data, self.issuer_public)
        except BadRequestError as exc:
            self.errors += 1
            self._log.warning("auth callout: unverifiable request refused: %s", exc)
            await self._reply(reply, b"")
            return
        secrets_ = [s for s in (request.token, request.password) if s]
        if any(len(s.encode("utf-8")) > self._max_token_bytes for s in secrets_):
            self.denied += 1
            self._log.info(
                "auth callout: refused client %s: credential longer than %d bytes",
                request.client_id,
                self._max_token_bytes,
            )
            await self._reply(reply, self._error_response(request, "credential too long"))
            return
        response = await self._decide(request, deadline_s, secrets_)
        await self._reply(reply, response)

    async def _decide(self, request: AuthRequest, deadline_s: float, secrets_: list[str]) -> bytes:
        """Run the authorizer and return the signed response (a user JWT or an error)."""
        timeout_s = max(deadline_s - time.time(), 0.0) + _DEADLINE_SLACK_S
        try:
            async with asyncio.timeout(timeout_s):
                grant = await self._authorizer(request)
        except Denied as exc:
            self.denied += 1
            reason = _redact(str(exc), secrets_) or "denied"
            self._log.info("auth callout: denied client %s: %s", request.client_id, reason)
            return self._error_response(request, reason)
        except TimeoutError:
            self.errors += 1
            self._log.error(
                "auth callout: authorizer gave no answer in %.1f s (client %s)",
                timeout_s,
                request.client_id,
            )
            return self._error_response(request, "authorizer timed out")
        except Exception as exc:
            self.errors += 1
            self._log.error(
                "auth callout: authorizer failed for client %s: %s: %s",
                request.client_id,
                type(exc).__name__,
                _redact(str(exc), secrets_),
            )
            return self._error_response(request, f"authorizer failed: {type(exc).__name__}")
        try:
            user_jwt = self._user_jwt(request, grant)
        except ValueError as exc:
            self.errors += 1
            self._log.error("auth callout: invalid grant for client %s: %s", request.client_id, exc)
            return self._error_response(request, "invalid grant")
        if grant.expires_at_s is not None and grant.expires_at_s <= int(time.time()):
            self.denied += 1
            self._log.info("auth callout: denied client %s: grant expired", request.client_id)
            return self._error_response(request, "grant expired")
        self.served += 1
        self._log.debug("auth callout: granted %r to client %s", grant.name, request.client_id)
        return self._response(request, {"jwt": user_jwt})

    def _user_jwt(self, request: AuthRequest, grant: Grant) -> str:
        """Return the user JWT for ``grant``; `ValueError` if the grant is malformed."""
        lists = (grant.pub_allow, grant.pub_deny, grant.sub_allow, grant.sub_deny)
        if any(isinstance(subjects, str) for subjects in lists):
            raise ValueError("subject lists must be tuples of subjects, not one string")
        for subject in (subject for subjects in lists for subject in subjects):
            if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
                raise ValueError(f"subject {subject!r} is empty or has whitespace")
        if not grant.name or not grant.account or "\n" in grant.name:
            raise ValueError("a grant needs a one-line name and an account")
        if grant.expires_at_s is not None and not isinstance(grant.expires_at_s, int):
            raise ValueError("expires_at_s must be an int")
        user: dict[str, Any] = {
            "pub": _permission(grant.pub_allow, grant.pub_deny),
            "sub": _permission(grant.sub_allow, grant.sub_deny),
            # No limits beyond the account's (what nats-io/jwt writes for a new user).
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        }
        if grant.tags:
            user["tags"] = list(grant.tags)
        claims: dict[str, Any] = {"aud": grant.account, "name": grant.name}
        if grant.expires_at_s is not None:
            claims["exp"] = grant.expires_at_s
        claims["sub"] = request.user_nkey
        return self._encode(claims, user)

    def _error_response(self, request: AuthRequest, reason: str) -> bytes:
        return self._response(request, {"error": reason})

    def _response(self, request: AuthRequest, body: dict[str, str]) -> bytes:
        claims = {"aud": request.server_id, "sub": request.user_nkey}
        nats = {**body, "type": "authorization_response", "version": 2}
        return self._encode(claims, nats).encode("ascii")

    def _encode(self, claims: Mapping[str, Any], nats: Mapping[str, Any]) -> str:
        return encode_jwt(claims, nats, self._keypair, self.issuer_public, int(time.time()))

    async def _reply(self, reply: str, payload: bytes) -> None:
        try:
            await self._nc.publish(reply, payload)
        except Exception as exc:
            self.errors += 1
            self._log.error("auth callout: reply not sent: %s: %s", type(exc).__name__, exc)


def _permission(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    # An empty allow list means "no limit" to nats-server: say "nothing" with a deny of ">".
    denied = [*deny, _SYS_SUBJECTS] if allow else [">"]
    result: dict[str, list[str]] = {"deny": sorted(set(denied))}
    if allow:
        result["allow"] = list(allow)
    return result


def _redact(text: str, secrets_: Sequence[str]) -> str:
    for secret in secrets_:
        text = text.replace(secret, "<redacted>")
    return text

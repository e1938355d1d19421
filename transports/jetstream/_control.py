"""The service's control requests: what a client presenting a token cannot do itself.

A client whose connections present tokens (`transports.jetstream._session`) may not
create streams, read key records or kick connections; it asks the service
(`transports.jetstream.service`) on ``mesa.ctl.<op>`` and the service checks the token in
the request, exactly as the auth callout does, before acting with its own credentials.

Wire format (JSON both ways): a request is ``{"token": <token>, ...arguments}``; a reply
is ``{"ok": <result>}`` or ``{"error": {"kind": <kind>, "message": <text>}}``, where kind
is one of `ERROR_KINDS`, each the name of the `transports.base` error the client raises.
No reply within the request timeout, or no service subscribed at all, is
`UnavailableError`.

Operations: ``whoami`` (the token's verified, clamped claims), ``provision`` and
``delete_repo`` (a repo's storage, `_provision`), ``put_key``, ``list_keys`` and
``revoke_key`` (API key records).
"""

from __future__ import annotations

import json
from typing import Any, Final

import nats.errors

from transports.auth import Claims
from transports.base import (
    InvalidNameError,
    MissingError,
    PermissionDeniedError,
    TokenRejectedError,
    TransportError,
    UnavailableError,
)
from transports.jetstream._connection import _Connection
from transports.jetstream._errors import _nats_errors
from transports.jetstream._names import CONTROL_PREFIX

#: Error kinds a reply may carry, and the error each becomes on the client.
ERROR_KINDS: Final[dict[str, type[Exception]]] = {
    "TokenRejectedError": TokenRejectedError,
    "PermissionDeniedError": PermissionDeniedError,
    "MissingError": MissingError,
    "InvalidNameError": InvalidNameError,
    "ValueError": ValueError,
    "UnavailableError": UnavailableError,
    "TransportError": TransportError,
}
#: The operations the service answers.
OPERATIONS: Final = ("whoami", "provision", "delete_repo", "put_key", "list_keys", "revoke_key")


def control_subject(op: str) -> str:
    """Return the subject the service answers ``op`` on."""
    return f"{CONTROL_PREFIX}.{op}"


def encode_reply(result: Any) -> bytes:
    """Return a successful reply carrying ``result``."""
    return json.dumps({"ok": result}, separators=(",", ":")).encode()


def encode_error(exc: BaseException) -> bytes:
    """Return a reply saying the request failed with ``exc`` (an unknown kind: internal)."""
    kind = next(
        (name for name, cls in ERROR_KINDS.items() if type(exc) is cls),
        next((n for n, c in ERROR_KINDS.items() if isinstance(exc, c)), "TransportError"),
    )
    message = str(exc) if kind != "TransportError" or isinstance(exc, TransportError) else ""
    return json.dumps(
        {
            "error": {
                "kind": kind,
                "message": message or f"the service failed ({type(exc).__name__})",
            }
        }
    ).encode()


def decode_reply(raw: bytes, op: str) -> Any:
    """Return a reply's result, or raise the error it carries.

    Raises:
        TransportError: (or the subclass named by the reply) the request failed, or the
            reply is not one.
    """
    try:
        reply = json.loads(raw)
    except ValueError:
        raise TransportError(f"the service sent a malformed reply to {op}") from None
    if not isinstance(reply, dict):
        raise TransportError(f"the service sent a malformed reply to {op}")
    if "ok" in reply:
        return reply["ok"]
    error = reply.get("error")
    if not isinstance(error, dict):
        raise TransportError(f"the service sent a malformed reply to {op}")
    cls = ERROR_KINDS.get(str(error.get("kind")), TransportError)
    raise cls(str(error.get("message", "")))


def claims_to_json(claims: Claims) -> dict[str, Any]:
    """Return ``claims`` as the ``whoami`` reply carries them."""
    return {
        "org": claims.org,
        "repos": dict(claims.repos),
        "iat": claims.iat,
        "exp": claims.exp,
        "mid": claims.mount_id,
        "scp": list(claims.scopes),
        "dlg": claims.delegated,
        "kid": claims.key_id,
    }


def claims_from_json(data: Any) -> Claims:
    """Return the claims of a ``whoami`` reply.

    Raises:
        TransportError: the reply does not hold claims.
    """
    try:
        return Claims(
            org=str(data["org"]),
            repos={str(k): str(v) for k, v in dict(data["repos"]).items()},
            iat=int(data["iat"]),
            exp=int(data["exp"]),
            mount_id=str(data["mid"]),
            scopes=tuple(str(s) for s in data["scp"]),
            delegated=bool(data["dlg"]),
            key_id=str(data["kid"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransportError(f"the service sent malformed claims: {exc!r}") from exc


async def call(conn: _Connection, op: str, token: str, **arguments: Any) -> Any:
    """Ask the service to do ``op`` for ``token`` and return its result.

    Raises:
        UnavailableError: no service answered in time (none may be running).
        TransportError: (or a subclass) the service refused or failed.
    """
    body = json.dumps({"token": token, **arguments}).encode()
    with _nats_errors(f"mesa service {op}"):
        try:
            msg = await conn.nc.request(control_subject(op), body, timeout=conn.timeout)
        except nats.errors.NoRespondersError:
            raise UnavailableError(
                f"mesa service {op}: no mesa service answers on this NATS deployment "
                "(run `mesa service run CREDENTIALS` beside nats-server: docs/operations.md)"
            ) from None
    return decode_reply(msg.data, op)

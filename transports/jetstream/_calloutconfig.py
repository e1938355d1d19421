"""The auth callout's side of the nats-server config, and its issuer keys (`callout`).

Split out of `transports.jetstream.callout`, which re-exports `callout_config` and
`new_issuer`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

import nkeys

from transports.jetstream._calloutjwt import is_public_key

#: The ``max_control_line`` `callout_config` sets: room for a 16 KiB token and the rest of
#: the CONNECT line.
MAX_CONTROL_LINE_BYTES = 32768
_SYS_SUBJECTS = "$SYS.>"
# A value written into the server config between double quotes.
_CONFIG_VALUE = re.compile(r"[!#-\[\]-~]+")


def new_issuer() -> tuple[str, str]:
    """Return a new callout issuer: (account seed ``SA...``, account public key ``A...``)."""
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_ACCOUNT)
    public = nkeys.from_seed(seed).public_key
    return seed.decode("ascii"), public.decode("ascii")


def callout_config(
    issuer_public: str,
    service_user: str,
    service_password: str,
    *,
    bypass_users: Sequence[tuple[str, str]] = (),
    account: str | None = None,
    app_account: str | None = None,
    max_control_line_bytes: int | None = MAX_CONTROL_LINE_BYTES,
) -> str:
    """Return the nats-server config text that sends every connection to the callout.

    Config mode, no operator. Changing it needs a server restart (a reload refuses auth
    callout changes). Two layouts:

    - ``account`` None: everything in the global account ``$G`` (JetStream works there
      with no ``accounts`` block). Authorization requests, which carry every connecting
      client's token, travel in ``$G``, so the ``bypass_users`` get a deny of ``$SYS.>``
      for publish and subscribe (the service user keeps it: it answers on
      ``$SYS._INBOX...``); callout users get the same deny from `CalloutService`.
    - ``account`` and ``app_account`` set: an ``accounts`` block with the service user alone
      in ``account`` (where the requests travel) and the bypass users in ``app_account``,
      which gets ``jetstream: enabled``; grants must then say ``account=app_account``
      (``$G`` cannot be given JetStream once accounts are defined). Nobody in
      ``app_account`` can see a request. The rest of the config must not define
      ``accounts`` again.

    Either way the text starts with a ``max_control_line`` setting (unless
    ``max_control_line_bytes`` is None) and has an ``authorization`` block whose
    ``auth_callout`` names the issuer and lets the service and bypass users skip the callout.

    Args:
        issuer_public: the issuer's account public key (``A...``, from `new_issuer`).
        service_user: the user the callout service connects as.
        service_password: its password.
        bypass_users: more (user, password) pairs that skip the callout (admins, daemons).
        account: the callout account, or None for ``$G``.
        app_account: the account of the bypass users and of the grants (with ``account``).
        max_control_line_bytes: the server's ``max_control_line``; None leaves it out.

    Raises:
        ValueError: a key, name or password the config cannot hold, or an account layout
            that is not one of the two above.
    """
    if not is_public_key(issuer_public, nkeys.PREFIX_BYTE_ACCOUNT):
        raise ValueError("issuer_public must be an account public key (A...)")
    users = [(service_user, service_password), *bypass_users]
    names = [name for name, _ in users]
    if len(set(names)) != len(names):
        raise ValueError("user names must be distinct")
    if (account is None) != (app_account is None) or (account and account == app_account):
        raise ValueError("account and app_account go together, and differ")
    accounts = [a for a in (account, app_account) if a is not None]
    for value in (*names, *(password for _, password in users), *accounts):
        if not _CONFIG_VALUE.fullmatch(value) or value.startswith("$"):
            raise ValueError(
                "user names, passwords and accounts must be printable ASCII without spaces, "
                "quotes or backslashes, and not start with $"
            )
    lines = []
    if max_control_line_bytes is not None:
        if max_control_line_bytes < 4096:
            raise ValueError("max_control_line_bytes below the server default (4096)")
        lines.append(f"max_control_line: {max_control_line_bytes}")
    service = _user_entry(service_user, service_password)
    callout = [f'    issuer: "{issuer_public}"', f"    users: [{', '.join(map(_quote, names))}]"]
    if account is None:
        sys_deny = f'{{ deny: ["{_SYS_SUBJECTS}"] }}'
        permissions = f", permissions: {{ publish: {sys_deny}, subscribe: {sys_deny} }}"
        entries = [service, *(_user_entry(n, p, permissions) for n, p in bypass_users)]
        lines += ["authorization {", "  users: [", *(f"    {e}" for e in entries), "  ]"]
    else:
        bypass = ", ".join(_user_entry(name, password) for name, password in bypass_users)
        lines += [
            "accounts {",
            f'  "{account}": {{ users: [ {service} ] }}',
            f'  "{app_account}": {{ jetstream: enabled, users: [ {bypass} ] }}',
            "}",
            "authorization {",
        ]
        callout.append(f'    account: "{account}"')
    lines += ["  auth_callout {", *callout, "  }", "}"]
    return "\n".join(lines) + "\n"


def _user_entry(name: str, password: str, extra: str = "") -> str:
    return f'{{ user: "{name}", password: "{password}"{extra} }}'


def _quote(value: str) -> str:
    return f'"{value}"'

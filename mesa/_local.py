"""The local default server a client uses when it is given no transport.

For now this is one in-process memory transport per Python process with an admin
key that is valid for every org: clients in one process share repos and realtime.
"""

from __future__ import annotations

import secrets

from transports.auth import ANY_ORG, Keyring
from transports.base import SystemClock, Transport
from transports.memory import MemoryTransport

_default: tuple[Transport, str] | None = None


def default_transport() -> tuple[Transport, str]:
    """Return the process's default transport and its admin API key."""
    global _default
    if _default is None:
        admin_key = "mesa_" + secrets.token_urlsafe(32)
        keyring = Keyring()
        keyring.add(admin_key, ANY_ORG)
        _default = (MemoryTransport(keyring, SystemClock()), admin_key)
    return _default

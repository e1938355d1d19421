"""Which errno a FUSE request fails with, for every error the SDK can raise.

Filesystem errors already carry the errno a local filesystem gives (the engine
checks every op against the folded tree). An expired token is ``EACCES``, a broken
or unreachable log is ``EIO``; anything unexpected is logged and becomes ``EIO``, so
no exception other than ``FUSEError`` ever reaches pyfuse3 (which would end the
mount's main loop).
"""

from __future__ import annotations

import errno
import logging

from mesa.errors import AuthenticationError, AuthorizationError, MesaError

log = logging.getLogger("mesa.fuse")


def errno_of(exc: BaseException) -> int:
    """Return the errno a FUSE request should fail with for ``exc``."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return errno.EACCES
    if isinstance(exc, MesaError):
        # MesaConnectionError is a ConnectionError (an OSError) without an errno.
        log.warning("request failed: %s", exc)
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    log.exception("unexpected error in a FUSE request", exc_info=exc)
    return errno.EIO

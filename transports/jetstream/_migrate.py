"""Moving the records of the one-bucket layout (``mesa_kv``) into the per-repo buckets.

Deployments made before the per-repo layout keep every record in ``mesa_kv``. The
service (`transports.jetstream.daemon`) moves them once, at start: each live key's
newest value is written to the bucket it now belongs in (`bucket_of_key`; the repo's
storage is provisioned first) unless that key exists there already, then the old
bucket is deleted. A move interrupted half way is finished by the next start (the old
bucket is deleted only after every key was written). Revisions restart in the new
buckets: a compare-and-set prepared against an old revision fails and is retried by
its caller like any lost race.
"""

from __future__ import annotations

import base64
import logging
from typing import Final

from transports.jetstream._connection import _Connection
from transports.jetstream._errors import _ERR_STREAM_NOT_FOUND, _ApiError
from transports.jetstream._kv import _Kv
from transports.jetstream._names import kv_stream, kv_subject

#: The bucket of the one-bucket layout.
LEGACY_BUCKET: Final = "mesa_kv"

_logger = logging.getLogger("transports.jetstream")


async def migrate_legacy_kv(conn: _Connection, kv: _Kv) -> int:
    """Move every live record of `LEGACY_BUCKET` to its bucket; return how many moved.

    Raises:
        UnavailableError: the server did not answer in time (run again later).
    """
    stream = kv_stream(LEGACY_BUCKET)
    try:
        await conn.api(f"STREAM.INFO.{stream}", {})
    except _ApiError as exc:
        if exc.err_code == _ERR_STREAM_NOT_FOUND:
            return 0
        raise
    moved = 0
    for key in await kv.live_keys(LEGACY_BUCKET, ">"):
        message = await conn.get_message(stream, {"last_by_subj": kv_subject(LEGACY_BUCKET, key)})
        if message is None:
            continue
        if key.count(".") < 2 and not key.startswith("_keys."):
            continue  # not a record of any repo: nothing reads it
        if await kv.get(key) is None:
            await kv.put(
                key,
                base64.b64decode(message.get("data") or ""),
                None,
                max_payload_bytes=conn.payload_limit(),
            )
            moved += 1
    await conn.api(f"STREAM.DELETE.{stream}", {})
    _logger.warning("moved %d records from %s to the per-repo buckets", moved, LEGACY_BUCKET)
    return moved

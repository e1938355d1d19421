"""Records of the one-bucket layout (``mesa_kv``) move to the per-repo buckets, none lost."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from tests.integration.natsutil import start_nats
from transports.auth import ANY_ORG, Claims, KeyRecord, Keyring, generate_key, sign
from transports.jetstream import JetStreamTransport
from transports.jetstream._migrate import LEGACY_BUCKET, migrate_legacy_kv

pytestmark = pytest.mark.integration


async def test_legacy_records_move_once_and_the_old_bucket_goes(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    admin = generate_key()
    record = KeyRecord.for_key(admin, ANY_ORG, name="old admin")
    legacy = {
        "acme.app.repo": b'{"name":"app"}',
        "acme.app.bookmark.bWFpbg==": b'{"change_id":"k"}',
        "acme.other.change.kkkk": b"{}",
        f"_keys.{record.key_id}": record.encode(),
    }
    nc = await nats.connect(server.url)
    try:
        kv = await nc.jetstream().create_key_value(bucket=LEGACY_BUCKET)
        for key, value in legacy.items():
            await kv.put(key, value)
        await kv.put("acme.gone.repo", b"x")
        await kv.delete("acme.gone.repo")  # a deleted record stays deleted
        transport = await JetStreamTransport.connect([server.url], keyring=Keyring())
        try:
            assert await migrate_legacy_kv(transport._conn, transport._kv) == len(legacy)
            assert await migrate_legacy_kv(transport._conn, transport._kv) == 0
            # The keyring is empty: the token verifies only because the key record moved.
            now = 1_700_000_000
            token = sign(admin, Claims("acme", {"*": "rw"}, now, 2**40, "m"))
            for key, value in legacy.items():
                if key.startswith("_keys."):
                    continue
                entry = await transport.kv_get(token, key)
                assert entry is not None
                assert entry.value == value, key
            assert await transport.kv_get(token, "acme.gone.repo") is None
            assert await transport.kv_keys(token, "acme.app.") == sorted(
                k for k in legacy if k.startswith("acme.app.")
            )
        finally:
            await transport.aclose()
        names = [info.config.name for info in await nc.jetstream().streams_info()]
        assert f"KV_{LEGACY_BUCKET}" not in names
    finally:
        await nc.close()
        server.stop()

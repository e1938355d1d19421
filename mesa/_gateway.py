"""The seam between the SDK and a transport: the same calls, failures as public errors.

Every call the SDK makes to a `transports.base.Transport` goes through a `Gateway`,
and only here is a `TransportError` caught and mapped (`mesa._errormap.api_error`):
an unreachable server is `MesaConnectionError`, a refused token
`AuthenticationError`, a token that does not grant the repo `AuthorizationError`, a
missing key, blob or log `NotFoundError`, a lost compare-and-set `ConflictError`, an
entry too large for the server `PayloadTooLargeError`, an invalid name
`InvalidOptionsError`. Layers above catch those public types, never a transport's.
Errors raised while iterating a subscription or a blob stream, and by a blob put
while it takes its chunks, are mapped the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from mesa._errormap import api_error
from transports.base import (
    Appended,
    BlobStream,
    Buffer,
    ByteChunks,
    Delivery,
    KvEntry,
    LogId,
    Subscription,
    Transport,
    TransportError,
)
from transports.keys import KeyRecord


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except TransportError as exc:
        raise api_error(exc) from exc


class GatewaySubscription:
    """A transport subscription whose iteration raises public errors."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub
        self._deliveries: AsyncIterator[Delivery] | None = None

    def __aiter__(self) -> GatewaySubscription:
        return self

    async def __anext__(self) -> Delivery:
        if self._deliveries is None:
            self._deliveries = self._sub.__aiter__()
        # The hot path of every delivery: a plain try, not a context manager.
        try:
            return await self._deliveries.__anext__()
        except TransportError as exc:
            raise api_error(exc) from exc

    async def aclose(self) -> None:
        """Stop the subscription."""
        with _mapped():
            await self._sub.aclose()


class GatewayBlobStream:
    """A transport blob stream whose iteration raises public errors."""

    def __init__(self, stream: BlobStream) -> None:
        self._stream = stream
        self._pieces: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> GatewayBlobStream:
        return self

    async def __anext__(self) -> bytes:
        if self._pieces is None:
            self._pieces = self._stream.__aiter__()
        with _mapped():
            return await self._pieces.__anext__()

    async def aclose(self) -> None:
        """Stop reading; release what the stream holds."""
        with _mapped():
            await self._stream.aclose()

    async def __aenter__(self) -> GatewayBlobStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Gateway:
    """A transport seen by the SDK (see module docstring)."""

    def __init__(self, transport: Transport) -> None:
        #: The transport itself, for the few callers that own its lifetime.
        self.raw = transport

    @property
    def max_payload_bytes(self) -> int:
        """The largest entry the server accepts."""
        return self.raw.max_payload_bytes

    async def append(self, token: str, log: LogId, payload: bytes, *, msg_id: str) -> Appended:
        """See `Transport.append`."""
        try:  # the hot path of every write: a plain try, not a context manager
            return await self.raw.append(token, log, payload, msg_id=msg_id)
        except TransportError as exc:
            raise api_error(exc) from exc

    async def last_seq(self, token: str, log: LogId) -> int:
        """See `Transport.last_seq`."""
        with _mapped():
            return await self.raw.last_seq(token, log)

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> GatewaySubscription:
        """See `Transport.subscribe`."""
        with _mapped():
            return GatewaySubscription(await self.raw.subscribe(token, log, after_seq=after_seq))

    @property
    def max_blob_bytes(self) -> int:
        """The largest blob the transport stores, in raw bytes."""
        return self.raw.max_blob_bytes

    async def put_blob(self, token: str, org: str, repo: str, data: Buffer) -> str:
        """See `Transport.put_blob`; too large is `PayloadTooLargeError`."""
        with _mapped():
            return await self.raw.put_blob(token, org, repo, data)

    async def put_blob_chunks(self, token: str, org: str, repo: str, chunks: ByteChunks) -> str:
        """See `Transport.put_blob_chunks`; too large is `PayloadTooLargeError`.

        An exception raised by ``chunks`` itself propagates unchanged.
        """
        with _mapped():
            return await self.raw.put_blob_chunks(token, org, repo, chunks)

    async def get_blob(self, token: str, org: str, repo: str, digest: str) -> bytes:
        """See `Transport.get_blob`."""
        with _mapped():
            return await self.raw.get_blob(token, org, repo, digest)

    async def get_blob_chunks(
        self, token: str, org: str, repo: str, digest: str
    ) -> GatewayBlobStream:
        """See `Transport.get_blob_chunks`; a missing blob is `NotFoundError`, raised here.

        Use the stream as an async context manager (or ``aclose`` it) so that a reader
        stopping early releases it; a corrupt blob raises `MesaError` by its end.
        """
        with _mapped():
            return GatewayBlobStream(await self.raw.get_blob_chunks(token, org, repo, digest))

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """See `Transport.kv_get`."""
        with _mapped():
            return await self.raw.kv_get(token, key)

    async def kv_put(
        self, token: str, key: str, value: bytes, *, expected_revision: int | None = None
    ) -> int:
        """See `Transport.kv_put`; a lost compare-and-set is `ConflictError`."""
        with _mapped():
            return await self.raw.kv_put(token, key, value, expected_revision=expected_revision)

    async def kv_delete(
        self, token: str, key: str, *, expected_revision: int | None = None
    ) -> None:
        """See `Transport.kv_delete`; a missing key is `NotFoundError`."""
        with _mapped():
            await self.raw.kv_delete(token, key, expected_revision=expected_revision)

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """See `Transport.kv_keys`."""
        with _mapped():
            return await self.raw.kv_keys(token, prefix)

    async def put_key(self, token: str, record: KeyRecord) -> None:
        """See `Transport.put_key`."""
        with _mapped():
            await self.raw.put_key(token, record)

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """See `Transport.list_keys`."""
        with _mapped():
            return await self.raw.list_keys(token, org)

    async def revoke_key(self, token: str, org: str, key_id: str) -> None:
        """See `Transport.revoke_key`."""
        with _mapped():
            await self.raw.revoke_key(token, org, key_id)

    async def delete_repo_storage(self, token: str, org: str, repo: str) -> None:
        """See `Transport.delete_repo_storage`."""
        with _mapped():
            await self.raw.delete_repo_storage(token, org, repo)

    async def aclose(self) -> None:
        """Close the transport."""
        with _mapped():
            await self.raw.aclose()

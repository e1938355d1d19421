"""Names: the streams, subjects and buckets of a repo, and the checks on names and ids.

Invariants:

- ``stream_name`` and ``blob_bucket`` are injective over valid (org, repo) pairs and
  safe on case-insensitive file systems (stream and bucket names become directory
  names): ``_`` becomes ``__``, an upper-case letter ``X`` becomes ``_x``; an encoding
  longer than 120 chars is replaced by ``_0`` + 40 hex chars of the sha256 of the repo
  name (the escape never produces ``_0``). Orgs contain no ``_``, so the mapping is
  injective (up to sha256 collisions for very long names).
- A change's log is the subject ``mesa.<org>.<repo>.log.<change>``; the repo's stream
  takes ``mesa.<org>.<repo>.log.*``.
- Every repo has its own KV bucket, ``mesa_<org>_<repo'>_kv``, holding the records of
  that repo under their full keys (``$KV.mesa_<org>_<repo'>_kv.<org>.<repo>.<...>``);
  an org's repo index is the bucket ``mesa_<org>_repos`` (key: the repo name; no repo
  bucket ends in ``_repos``); API key records live in ``mesa_keys``, which only the
  service reaches. One bucket per repo is what lets a permission hold at whole-stream
  granularity (reference/nats-auth-callout.md).
- A connection presenting a token takes its inbox prefix from the token
  (`inbox_prefix`): the auth callout allows that prefix and no other inbox.
- Nothing sent as a header can break the header block or outgrow `HEADER_RESERVE`:
  a ``msg_id`` is at most `MAX_MSG_ID_BYTES` UTF-8 bytes and has no line breaks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from transports.base import LogId, validate_org, validate_repo

#: Bytes of ``max_payload`` kept for message headers (``Nats-Msg-Id``).
HEADER_RESERVE: Final = 512
#: The longest ``msg_id`` accepted, in UTF-8 bytes.
MAX_MSG_ID_BYTES: Final = 256
#: The KV bucket holding every API key record (reached only by the service).
KEYS_BUCKET: Final = "mesa_keys"
#: The last token of ``<inbox prefix>.<notice>``, where the service tells a connection
#: that the key of its token was revoked, just before closing it.
REVOKED_NOTICE: Final = "mesa-revoked"
#: The subject prefix of the service's control requests (`transports.jetstream.service`).
CONTROL_PREFIX: Final = "mesa.ctl"

#: The KV keys of API key records: ``_keys.<key id>`` (no org starts with ``_``).
KEY_RECORDS_FILTER: Final = "_keys.*"
#: What a key id looks like (`transports.keys.key_id_of_public`).
KEY_ID_RE: Final = re.compile(r"^mk[0-9a-f]{16}$")

_JS_API: Final = "$JS.API"
_MAX_REPO_TOKEN: Final = 120

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_KV_TOKEN_RE = re.compile(r"^[A-Za-z0-9_=-]+$")


def _repo_token(repo: str) -> str:
    """Return the case-insensitive-safe, injective encoding of a repo name."""
    encoded = "".join("__" if c == "_" else f"_{c.lower()}" if "A" <= c <= "Z" else c for c in repo)
    if len(encoded) <= _MAX_REPO_TOKEN:
        return encoded
    return "_0" + hashlib.sha256(repo.encode()).hexdigest()[:40]


def stream_name(org: str, repo: str) -> str:
    """Return the name of the log stream of ``org/repo``."""
    return f"MESA_{validate_org(org)}_{_repo_token(validate_repo(repo))}"


def log_subject(log: LogId) -> str:
    """Return the subject of a change's log."""
    return f"mesa.{log.org}.{log.repo}.log.{log.change}"


def _log_subjects(org: str, repo: str) -> str:
    """Return the subject filter of the log stream of ``org/repo``: every change's log."""
    return f"mesa.{org}.{repo}.log.*"


def blob_bucket(org: str, repo: str) -> str:
    """Return the Object Store bucket holding the blobs of ``org/repo``."""
    return f"mesa_{validate_org(org)}_{_repo_token(validate_repo(repo))}_blobs"


def _blob_stream(bucket: str) -> str:
    """Return the stream behind the Object Store bucket ``bucket``."""
    return f"OBJ_{bucket}"


def _blob_chunks_subject(bucket: str, nuid: str) -> str:
    """Return the subject holding the chunks of the object stored with ``nuid``."""
    return f"$O.{bucket}.C.{nuid}"


def kv_bucket(org: str, repo: str) -> str:
    """Return the KV bucket holding the records of ``org/repo``."""
    return f"mesa_{validate_org(org)}_{_repo_token(validate_repo(repo))}_kv"


def index_bucket(org: str) -> str:
    """Return the KV bucket listing the repos of ``org`` (key: repo name)."""
    return f"mesa_{validate_org(org)}_repos"


def kv_stream(bucket: str) -> str:
    """Return the stream behind the KV bucket ``bucket``."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """Return the subject of ``key`` in the KV bucket ``bucket``."""
    return f"$KV.{bucket}.{key}"


def bucket_of_key(key: str) -> str:
    """Return the bucket a KV key lives in: its repo's, or the key records' one."""
    if key.startswith("_keys."):
        return KEYS_BUCKET
    org, repo = key.split(".", 2)[:2]
    return kv_bucket(org, repo)


def inbox_prefix(token: str) -> str:
    """Return the inbox prefix of a connection presenting ``token``.

    Derived from the token, so the auth callout can allow exactly it: a connection
    holding another token cannot subscribe to this one's replies.
    """
    return "_INBOX_" + hashlib.sha256(token.encode()).hexdigest()[:24]


def key_record_key(key_id: str) -> str:
    """Return the KV key of the record of the API key ``key_id``."""
    if not KEY_ID_RE.match(key_id):
        raise ValueError(f"not a key id: {key_id!r}")
    return f"_keys.{key_id}"


def _is_digest(digest: object) -> bool:
    """Return whether ``digest`` can name a blob (64 lowercase hex chars)."""
    return isinstance(digest, str) and _DIGEST_RE.match(digest) is not None


def _kv_filter(prefix: str, org: str) -> str | None:
    """Return a KV subject filter covering the keys of ``org`` that start with ``prefix``.

    None means no such key can exist. The filter may cover more keys than the prefix
    (a partial last token); callers still filter by prefix.
    """
    head, dot, _ = prefix.rpartition(".")
    if not dot:
        return f"{org}.>" if org.startswith(prefix) else None
    tokens = head.split(".")
    if tokens[0] != org or not all(_KV_TOKEN_RE.match(t) for t in tokens):
        return None
    return f"{head}.>"


def _check_msg_id(msg_id: str) -> None:
    """Raise `ValueError` unless ``msg_id`` fits a ``Nats-Msg-Id`` header.

    Raises:
        ValueError: ``msg_id`` is empty, longer than `MAX_MSG_ID_BYTES` or has a line
            break.
    """
    if not isinstance(msg_id, str) or not msg_id:
        raise ValueError("msg_id must be a non-empty string")
    if len(msg_id.encode()) > MAX_MSG_ID_BYTES:
        raise ValueError(f"msg_id must be at most {MAX_MSG_ID_BYTES} bytes")
    if "\r" in msg_id or "\n" in msg_id:
        raise ValueError("msg_id must not contain line breaks")

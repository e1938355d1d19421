"""What a connection presenting a token may publish and subscribe to (the auth callout's answer).

Invariants:

- Permissions hold at whole-stream granularity (reference/nats-auth-callout.md: the
  server does not scope ``STREAM.MSG.GET`` by subject, nor subscribe permissions on
  consumer deliveries), so a token's repos are listed stream by stream: the repo's log
  stream, KV bucket and blob store, never a wildcard over streams.
- Every token may read the streams of its repos: stream info, message get (direct and
  through the leader), consumers (create, info, delete, pull next), flow control.
- Only ``rw`` repos (and only with the ``write`` scope) add publishing: the repo's log
  subjects, its KV keys and its blob chunks and metas, and a purge of its blob store
  (a failed upload removes its chunks). Nothing may publish to a log stream's API
  besides that: the log stream is ``deny_delete`` and ``deny_purge``, and no token may
  create, update or delete a stream; the service does that (`_control`).
- An org-wide token (repo ``*``) reaches the repos that exist when it connects (the
  callout lists the org's index) and may read the index itself; a repo created later
  needs a new connection (a new token).
- Replies: a connection may subscribe only to its own inbox prefix (`inbox_prefix`),
  and may publish control requests (``mesa.ctl.*``, each checked by the service).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from transports.auth import READ_WRITE
from transports.jetstream._names import (
    _JS_API,
    CONTROL_PREFIX,
    _blob_stream,
    _log_subjects,
    blob_bucket,
    index_bucket,
    kv_bucket,
    kv_stream,
    stream_name,
)


@dataclass(frozen=True)
class Permissions:
    """Subjects a connection may publish and subscribe to."""

    pub_allow: tuple[str, ...]
    sub_allow: tuple[str, ...]


def _read_stream(stream: str) -> list[str]:
    """Return what reading the stream ``stream`` takes (module docstring)."""
    return [
        f"{_JS_API}.STREAM.INFO.{stream}",
        f"{_JS_API}.STREAM.MSG.GET.{stream}",
        f"{_JS_API}.DIRECT.GET.{stream}",
        f"{_JS_API}.DIRECT.GET.{stream}.>",
        f"{_JS_API}.CONSUMER.CREATE.{stream}",
        f"{_JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{_JS_API}.CONSUMER.INFO.{stream}.*",
        f"{_JS_API}.CONSUMER.DELETE.{stream}.*",
        f"{_JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]


def permissions(
    org: str, repos: Mapping[str, str], inbox: str, *, may_write: bool, org_wide: bool
) -> Permissions:
    """Return the permissions of a connection (module docstring).

    Args:
        org: the token's org.
        repos: repo name -> ``rw`` or ``ro``: every repo the connection may reach.
        inbox: the connection's inbox prefix.
        may_write: whether the token has the ``write`` scope.
        org_wide: whether the token grants every repo of the org (reads the index).
    """
    pub = [f"{_JS_API}.INFO", f"{CONTROL_PREFIX}.*"]
    for repo in sorted(repos):
        log, kv, blobs = stream_name(org, repo), kv_bucket(org, repo), blob_bucket(org, repo)
        for stream in (log, kv_stream(kv), _blob_stream(blobs)):
            pub.extend(_read_stream(stream))
        if may_write and repos[repo] == READ_WRITE:
            pub.extend(
                [
                    _log_subjects(org, repo),
                    f"$KV.{kv}.>",
                    f"$O.{blobs}.>",
                    f"{_JS_API}.STREAM.PURGE.{_blob_stream(blobs)}",
                ]
            )
    if org_wide:
        pub.extend(_read_stream(kv_stream(index_bucket(org))))
    return Permissions(pub_allow=tuple(pub), sub_allow=(f"{inbox}.>",))

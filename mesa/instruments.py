"""The documented internal seam for instruments: benchmarks, load runs and their tests.

Benchmarks need a few things the SDK does not offer its users: the raw transport to
fill a log quickly, how many entries a mount folded, a snapshot stored on demand, the
folded state's tree hash to compare mounts. They get them here, by name, instead of
reaching into ``mesa``'s private modules; this module is the only place outside
``mesa/`` that may know how a mount is built, and `tests/test_layering.py` allows
exactly this seam. Nothing here is part of the SDK's compatibility promise.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesa import _snapshots
from mesa._client import Mesa
from mesa._fs import MesaFileSystem
from mesa._mount import RepoMount
from mesa._store import RepoStore, open_store
from transports.base import Transport


@dataclass(frozen=True)
class FoldedState:
    """What one repo of a mount has folded: sequence, entries and the tree hash."""

    change_id: str
    seq: int
    entries: int
    tree_hash: str


def raw_transport(client: Mesa) -> tuple[Transport, str]:
    """Return the client's transport and a short-lived all-repos management token."""
    return client.transport, client.management_token()


async def repo_store(client: Mesa, repo: str) -> RepoStore:
    """Return ``repo``'s store seen with a management token (records, logs, blobs)."""
    return await open_store(client._ctx, client.management_token(), repo)


def _repo(fs: MesaFileSystem, repo: str) -> RepoMount:
    for mounted in fs.repo_mounts:
        if mounted.name == repo:
            return mounted
    raise KeyError(f"{repo!r} is not mounted here")


def folded_state(fs: MesaFileSystem, repo: str) -> FoldedState:
    """Return what ``fs`` has folded of ``repo``'s change."""
    mounted = _repo(fs, repo)
    state = mounted.replica.state
    return FoldedState(mounted.change_id, state.seq, mounted.entries, state.tree.hash())


async def store_snapshot(fs: MesaFileSystem, repo: str) -> int:
    """Store a snapshot of ``repo``'s folded state now; return its size in bytes."""
    mounted = _repo(fs, repo)
    data = _snapshots.encode(mounted.replica.state)
    await _snapshots.store(
        mounted.ctx.gateway,
        mounted.token,
        mounted.org,
        mounted.name,
        mounted.change_id,
        data=data,
        seq=mounted.replica.seq,
        entries=mounted.entries,
        now_ms=mounted.ctx.clock.now_ms(),
    )
    return len(data)

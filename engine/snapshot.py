"""Snapshots: the full state of a change replica as versioned, checksummed bytes.

A snapshot lets a mount start from a folded state at sequence N and fold only the
tail of the log after N (design.md §3). It holds everything the fold reads, not only
what a reader sees: inode numbers and the inode counter (so later creations get the
same inodes on every replica), each node's recent versions (so races with entries
before N are still decided as the live replica decides them), the applied op ids
(so a retried entry logged again after N is still skipped) and the race window.

Format (version 2), built with `engine.codec.Writer` and read with `Reader`::

    version    u8      SNAPSHOT_VERSION
    seq        uint    the last folded sequence
    window_ms  uint    the race window
    next_ino   uint    the next inode number the tree will hand out
    applied    uint n, then n times: author str, watermark uint,
                       uint m, then m sparse counters (uint, strictly increasing,
                       each above the watermark); authors strictly increasing
    tree       node    the root directory, see below
    crc        4 bytes (Writer.finish)

    node       kind u8 (0 directory, 1 file, 2 symlink), ino uint, mode uint,
               mtime_ms sint, atime_ms sint, versions, meta, then by kind:
               directory: uint child count, the child names (str, strictly
               increasing), then the child nodes in that order (pre-order);
               file: merge; symlink: target str
    versions   uint count, then per version: seq uint, time_ms sint, author str,
               u8 0 (no value before) or 1 followed by a merge
    merge      uint side count k >= 1, then the 2k-1 terms in `Merge.terms` order,
               each u8 0 (absent) or 1 followed by a content
    meta       uint key count, then per key (strictly increasing): key str, merge
               (its value; never resolved to absent), versions

Version 1 (before per-file metadata) is the same without ``meta``; it still
decodes, as a state whose nodes have no metadata. Snapshots are always written in
version 2.

Invariants: encoding is deterministic (children and authors sorted, contents
normalized by the codec), so equal states give equal bytes;
``decode_snapshot(encode_snapshot(s))`` has the same tree hash, inodes, versions,
sequence, applied ops and window as ``s``, and folding the same entry into both
gives the same result. Decoding raises `CodecError` for every malformed input
(unknown version, CRC mismatch, truncation, bad tags, invalid names or authors,
duplicate or out-of-range inodes, unsorted keys) and never returns a wrong state.
Nodes are walked with an explicit stack, so tree depth is not bounded by Python's
recursion limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.codec import MAX_VARINT_BYTES, UINT_MAX, Reader, Writer
from engine.content import Content
from engine.errors import CodecError, FsError, InvalidInputError
from engine.fold import AppliedOps, ChangeState
from engine.ids import validate_author
from engine.merge import Merge, Value
from engine.metadata import check_key
from engine.paths import validate_name
from engine.tree import (
    ROOT_INO,
    AnyNode,
    DirNode,
    FileNode,
    Meta,
    MetaSlot,
    SymlinkNode,
    Tree,
    Version,
)

SNAPSHOT_VERSION = 2
#: The snapshot versions this build decodes (1: before per-file metadata).
READ_VERSIONS = (1, 2)

_KIND_DIR = 0
_KIND_FILE = 1
_KIND_SYMLINK = 2

_WHAT = "snapshot"


# -- encoding ----------------------------------------------------------------------------


def encode_snapshot(state: ChangeState) -> bytes:
    """Encode a replica's full state (see module docstring).

    Args:
        state: the state to encode; it is not modified.

    Returns:
        The snapshot bytes; equal states give equal bytes.

    Raises:
        InvalidInputError: the state holds a value the format cannot represent.
    """
    w = Writer(SNAPSHOT_VERSION)
    w.uint(state.seq)
    w.uint(state.window_ms)
    w.uint(state.tree.next_ino)
    _write_applied(w, state.applied)
    _write_tree(w, state.tree.root)
    return w.finish()


def _write_applied(w: Writer, applied: AppliedOps) -> None:
    authors = sorted(set(applied.watermark) | set(applied.sparse))
    w.uint(len(authors))
    for author in authors:
        w.str_(author)
        w.uint(applied.watermark.get(author, 0))
        extra = sorted(applied.sparse.get(author, ()))
        w.uint(len(extra))
        for counter in extra:
            w.uint(counter)


def _write_tree(w: Writer, root: DirNode) -> None:
    """Write the tree in pre-order: a directory's head and child names, then its children."""
    stack: list[AnyNode] = [root]
    while stack:
        node = stack.pop()
        _write_node_head(w, node)
        if isinstance(node, DirNode):
            names = sorted(node.children)
            w.uint(len(names))
            for name in names:
                w.str_(name)
            # Reversed, so the first child (and its whole subtree) is written next.
            stack.extend(node.children[name] for name in reversed(names))
        elif isinstance(node, FileNode):
            _write_merge(w, node.value)
        else:
            w.str_(node.target)


def _write_node_head(w: Writer, node: AnyNode) -> None:
    if isinstance(node, DirNode):
        w.u8(_KIND_DIR)
    elif isinstance(node, FileNode):
        w.u8(_KIND_FILE)
    else:
        w.u8(_KIND_SYMLINK)
    w.uint(node.ino)
    w.uint(node.mode)
    w.sint(node.mtime_ms)
    w.sint(node.atime_ms)
    _write_versions(w, node.versions)
    meta = node.meta or {}
    w.uint(len(meta))
    for key in sorted(meta):
        w.str_(key)
        _write_merge(w, meta[key].value)
        _write_versions(w, meta[key].versions)


def _write_versions(w: Writer, versions: Sequence[Version]) -> None:
    w.uint(len(versions))
    for version in versions:
        w.uint(version.seq)
        w.sint(version.time_ms)
        w.str_(version.author)
        if version.before is None:
            w.u8(0)
        else:
            w.u8(1)
            _write_merge(w, version.before)


def _write_merge(w: Writer, merge: Merge) -> None:
    w.uint(len(merge.adds))
    for term in merge.terms():
        _write_value(w, term)


def _write_value(w: Writer, value: Value) -> None:
    if value is None:
        w.u8(0)
    else:
        w.u8(1)
        w.content(value)


# -- decoding ----------------------------------------------------------------------------


def decode_snapshot(data: bytes) -> ChangeState:
    """Decode a snapshot made by `encode_snapshot`.

    Args:
        data: the complete snapshot bytes.

    Returns:
        A fresh, independent state.

    Raises:
        CodecError: the bytes are not a valid snapshot of a version this build reads;
            never another exception type.
    """
    version = data[0] if data and data[0] in READ_VERSIONS else SNAPSHOT_VERSION
    r = _SnapshotReader.open(data, version=version, what=_WHAT)
    assert isinstance(r, _SnapshotReader)
    r.with_meta = version >= 2
    seq = r.uint()
    window_ms = r.uint()
    next_ino = r.uint()
    applied = _read_applied(r)
    root = _read_tree(r, next_ino)
    r.finish()
    return ChangeState(tree=Tree(root, next_ino), seq=seq, applied=applied, window_ms=window_ms)


class _SnapshotReader(Reader):
    """A `Reader` with a fast path for the varints and bytes a snapshot is made of.

    A snapshot holds several varints per node (a 100,000-entry directory is millions);
    reading them byte by byte through `Reader.raw` dominated decoding. Well-formed
    input is read here directly; anything else (truncation, a non-minimal or too long
    varint, a value too large) goes to `Reader`, which reports it as it always did.
    """

    #: Whether nodes carry metadata (version 2 on).
    with_meta = True

    def u8(self) -> int:
        pos = self._pos
        if pos < len(self._data):
            self._pos = pos + 1
            return self._data[pos]
        return super().u8()

    def uint(self) -> int:
        data, pos = self._data, self._pos
        value = shift = 0
        for i in range(pos, min(pos + MAX_VARINT_BYTES, len(data))):
            byte = data[i]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if (byte == 0 and i > pos) or value > UINT_MAX:
                    break
                self._pos = i + 1
                return value
            shift += 7
        return super().uint()


def _fail(r: Reader, message: str) -> CodecError:
    return CodecError(f"corrupt {_WHAT} at offset {r.offset}: {message}")


def _read_author(r: Reader) -> str:
    author = r.str_()
    try:
        return validate_author(author)
    except InvalidInputError as exc:
        raise _fail(r, str(exc)) from exc


def _read_applied(r: Reader) -> AppliedOps:
    applied = AppliedOps()
    previous: str | None = None
    for _ in range(r.count("applied author")):
        author = _read_author(r)
        if previous is not None and author <= previous:
            raise _fail(r, f"applied authors not strictly increasing: {author!r}")
        previous = author
        watermark = r.uint()
        applied.watermark[author] = watermark
        last = watermark
        extra: set[int] = set()
        for _ in range(r.count("sparse counter")):
            counter = r.uint()
            if counter <= last + (1 if not extra else 0):
                # The first sparse counter must leave a gap above the watermark,
                # else the watermark would have absorbed it.
                raise _fail(r, f"sparse counter {counter} out of order for {author!r}")
            extra.add(counter)
            last = counter
        if extra:
            applied.sparse[author] = extra
    return applied


def _read_tree(r: _SnapshotReader, next_ino: int) -> DirNode:
    inos: set[int] = set()
    root = _read_node(r, inos, next_ino)
    if not isinstance(root, DirNode) or root.ino != ROOT_INO:
        raise _fail(r, "the root must be a directory with inode 1")
    # Each frame: a directory and its child names still to attach, last first (so the
    # next one pops off the end in constant time, however wide the directory).
    stack: list[tuple[DirNode, list[str]]] = [(root, _read_names(r)[::-1])]
    while stack:
        directory, names = stack[-1]
        if not names:
            stack.pop()
            continue
        name = names.pop()
        child = _read_node(r, inos, next_ino)
        directory.children[name] = child
        if isinstance(child, DirNode):
            stack.append((child, _read_names(r)[::-1]))
    return root


def _read_names(r: Reader) -> list[str]:
    names: list[str] = []
    for _ in range(r.count("child")):
        name = r.str_()
        try:
            validate_name(name)
        except FsError as exc:
            raise _fail(r, f"invalid child name {name!r}: {exc.message}") from exc
        if names and name <= names[-1]:
            raise _fail(r, f"child names not strictly increasing: {name!r}")
        names.append(name)
    return names


def _read_node(r: _SnapshotReader, inos: set[int], next_ino: int) -> AnyNode:
    kind = r.u8()
    if kind not in (_KIND_DIR, _KIND_FILE, _KIND_SYMLINK):
        raise _fail(r, f"unknown node kind {kind}")
    ino = r.uint()
    if ino in inos or not ROOT_INO <= ino < next_ino:
        raise _fail(r, f"inode {ino} is duplicated or not below next_ino {next_ino}")
    inos.add(ino)
    mode, mtime_ms, atime_ms = r.uint(), r.sint(), r.sint()
    versions = _read_versions(r)
    meta = _read_meta(r) if r.with_meta else None
    node: AnyNode
    if kind == _KIND_DIR:
        node = DirNode(ino=ino, mode=mode, mtime_ms=mtime_ms, atime_ms=atime_ms, versions=versions)
    elif kind == _KIND_FILE:
        value = _read_merge(r)
        node = FileNode(
            ino=ino, mode=mode, mtime_ms=mtime_ms, atime_ms=atime_ms, versions=versions, value=value
        )
    else:
        target = r.str_()
        node = SymlinkNode(
            ino=ino,
            mode=mode,
            mtime_ms=mtime_ms,
            atime_ms=atime_ms,
            versions=versions,
            target=target,
        )
    node.meta = meta
    return node


def _read_meta(r: Reader) -> Meta | None:
    meta: Meta = {}
    previous: str | None = None
    for _ in range(r.count("metadata key")):
        key = r.str_()
        try:
            check_key(key)
        except InvalidInputError as exc:
            raise _fail(r, str(exc)) from exc
        if previous is not None and key <= previous:
            raise _fail(r, f"metadata keys not strictly increasing: {key!r}")
        previous = key
        value = _read_merge(r)
        if value.is_resolved() and value.adds[0] is None:
            raise _fail(r, f"metadata key {key!r} holds no value")
        meta[key] = MetaSlot(value, tuple(_read_versions(r)))
    return meta or None


def _read_versions(r: Reader) -> list[Version]:
    versions: list[Version] = []
    for _ in range(r.count("version")):
        seq = r.uint()
        time_ms = r.sint()
        author = _read_author(r)
        tag = r.u8()
        if tag > 1:
            raise _fail(r, f"version value tag is {tag}, not 0 or 1")
        before = _read_merge(r) if tag == 1 else None
        versions.append(Version(seq, time_ms, author, before))
    return versions


def _read_merge(r: Reader) -> Merge:
    sides = r.count("merge side")
    if sides < 1:
        raise _fail(r, "a merge has at least one side")
    terms = [_read_value(r) for _ in range(2 * sides - 1)]
    return Merge(tuple(terms[0::2]), tuple(terms[1::2]))


def _read_value(r: Reader) -> Value:
    tag = r.u8()
    if tag == 0:
        return None
    if tag != 1:
        raise _fail(r, f"value tag is {tag}, not 0 or 1")
    content: Content = r.content()
    return content

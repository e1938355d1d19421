"""The versioned binary codec for log entries, and the primitives other codecs reuse.

Format (version 2) of an encoded `Entry`::

    version  u8                      always byte 0; see "Versions" below
    kind     u8                      op kind, see ``_KINDS`` (1 Write .. 10 SetMetadata)
    fields   ...                     the op's fields, in dataclass order
    author   str
    counter  uint
    seen     uint
    crc      4 bytes, big-endian     zlib.crc32 of every byte before it

Field encodings:

- ``uint``: unsigned LEB128 varint, at most 10 bytes, value below 2**64, minimal
  (no redundant trailing ``0x00`` group).
- ``sint``: zigzag-mapped signed int (range -2**63 .. 2**63 - 1), then ``uint``.
- ``bool``: one byte, ``0`` or ``1``.
- ``bytes``: ``uint`` length, then the bytes.
- ``str``: ``bytes`` holding strict UTF-8.
- ``path``: ``uint`` component count, then each component as ``str``.
- ``content``: ``uint`` segment count, then per segment a tag byte: ``0`` inline
  (followed by ``bytes``) or ``1`` blob (32 raw sha256 bytes, then ``uint`` size).

Op fields: Write ``path content mode terms``; Append ``path content mode``;
Mkdir ``path mode parents``;
Rm ``path recursive``; Mv ``src dst``; Cp ``src dst recursive``; Chmod ``path mode``;
Symlink ``path target``; Utimes ``path atime_ms(sint) mtime_ms(sint)``. The path of a
Write, Append or Symlink has at least one component: the root is always a directory,
so such an entry could not be folded and is refused as corrupt (every other op on the
root folds, as a no-op or on the root directory).

``terms`` (`Write.terms`, a write-back's conflict terms) is a ``uint`` count, then
each term as ``content``; the count is 0 (a plain write) or odd and at least 3.

Version 1 is version 2 without ``terms``. It still decodes, as entries marked
``legacy_writeback`` (`Entry`), which the fold treats as version 1 did, and such an
entry encodes back to its version 1 bytes.
SetMetadata ``path clear(bool)``, ``uint`` item count, then per item the key as
``str`` (keys strictly increasing, each valid by `engine.metadata.check_key`) and a
tag byte: ``0`` delete, or ``1`` followed by the value as ``str`` (valid by
`engine.metadata.check_value`, never empty).

Version 2 (`CODEC_VERSION`) is what this build writes: it added ``terms`` to Write and
op kind 10, SetMetadata. Kind 10 inside a version-1 entry is corrupt.

Invariants:

- Encoding is deterministic: contents are normalized with `Content.from_segments`
  before writing and varints are minimal, so equal entries give equal bytes.
  Decoding also normalizes contents, so it accepts a non-normalized segment list
  (split inline runs, empty segments); everything else has one encoding only.
- ``decode_entry(encode_entry(e)) == e`` for every valid entry.
- Decoding never returns a wrong value and never skips: every malformed input
  (empty, unknown version, CRC mismatch, truncation, trailing bytes, unknown op kind
  or segment tag, bad boolean, invalid UTF-8, invalid path component or author,
  over-long or non-minimal varint, a file or symlink at the root) raises `CodecError`,
  and no other exception type.
- Decoding and folding agree: every entry `decode_entry` returns can be folded into
  any state (`engine.fold.fold` does not raise for it).
- The version byte is checked before the CRC, so data from a newer writer is
  reported as an unknown version rather than as corruption.

`Writer` and `Reader` are the shared primitives: a `Writer` starts with a version
byte and `Writer.finish` appends the CRC; `Reader.open` checks the version and CRC
and `Reader.finish` rejects trailing bytes. Other encoders (the tree snapshot codec)
reuse them with their own version numbers.
"""

from __future__ import annotations

import re
import struct
import zlib

from engine.content import BlobRef, Content, Inline, Segment
from engine.errors import CodecError, FsError, InvalidInputError
from engine.ids import validate_author
from engine.metadata import check_key, check_value
from engine.ops import (
    Append,
    Chmod,
    Cp,
    Entry,
    Mkdir,
    Mv,
    Op,
    Rm,
    SetMetadata,
    Symlink,
    Utimes,
    Write,
)
from engine.paths import RelPath, validate

CODEC_VERSION = 2
#: Versions `decode_entry` reads: 1 (write-backs found by parsing bytes) and 2.
READ_VERSIONS = frozenset({1, CODEC_VERSION})
_V1 = 1

MAX_VARINT_BYTES = 10
UINT_MAX = 2**64 - 1
SINT_MIN = -(2**63)
SINT_MAX = 2**63 - 1
DIGEST_BYTES = 32
CRC_BYTES = 4

_TAG_INLINE = 0
_TAG_BLOB = 1

_KIND_WRITE = 1
_KIND_APPEND = 2
_KIND_MKDIR = 3
_KIND_RM = 4
_KIND_MV = 5
_KIND_CP = 6
_KIND_CHMOD = 7
_KIND_SYMLINK = 8
_KIND_UTIMES = 9
_KIND_SET_METADATA = 10

_KINDS: dict[type[Op], int] = {
    Write: _KIND_WRITE,
    Append: _KIND_APPEND,
    Mkdir: _KIND_MKDIR,
    Rm: _KIND_RM,
    Mv: _KIND_MV,
    Cp: _KIND_CP,
    Chmod: _KIND_CHMOD,
    Symlink: _KIND_SYMLINK,
    Utimes: _KIND_UTIMES,
    SetMetadata: _KIND_SET_METADATA,
}

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_CRC = struct.Struct(">I")


class Writer:
    """Build an encoding: a version byte, fields, and a CRC32 trailer on `finish`.

    Encoding methods raise `InvalidInputError` for values the format cannot represent
    (negative or too large ints, unencodable strings, malformed digests or paths).
    """

    def __init__(self, version: int) -> None:
        """Start an encoding whose byte 0 is ``version``.

        Args:
            version: the format version of the encoding, 0..255.
        """
        self._buf = bytearray()
        self.u8(version)

    def u8(self, value: int) -> None:
        """Write one byte.

        Args:
            value: an int in 0..255.
        """
        if not 0 <= value <= 0xFF:
            raise InvalidInputError(f"not a byte: {value}")
        self._buf.append(value)

    def raw(self, data: bytes) -> None:
        """Write bytes with no length prefix (the reader must know the length).

        Args:
            data: the bytes.
        """
        self._buf += data

    def uint(self, value: int) -> None:
        """Write an unsigned LEB128 varint.

        Args:
            value: an int in 0..2**64-1.
        """
        if not 0 <= value <= UINT_MAX:
            raise InvalidInputError(f"unsigned int out of range 0..2**64-1: {value}")
        while True:
            low = value & 0x7F
            value >>= 7
            if value:
                self._buf.append(low | 0x80)
            else:
                self._buf.append(low)
                return

    def sint(self, value: int) -> None:
        """Write a signed int as a zigzag-mapped varint.

        Args:
            value: an int in -2**63..2**63-1.
        """
        if not SINT_MIN <= value <= SINT_MAX:
            raise InvalidInputError(f"signed int out of range -2**63..2**63-1: {value}")
        self.uint(value * 2 if value >= 0 else -value * 2 - 1)

    def bool_(self, value: bool) -> None:  # noqa: FBT001
        """Write a boolean as one byte, 0 or 1.

        Args:
            value: the boolean.
        """
        self._buf.append(1 if value else 0)

    def bytes_(self, data: bytes) -> None:
        """Write length-prefixed bytes.

        Args:
            data: the bytes.
        """
        self.uint(len(data))
        self._buf += data

    def str_(self, value: str) -> None:
        """Write a length-prefixed UTF-8 string.

        Args:
            value: the string; lone surrogates cannot be encoded.
        """
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"string is not encodable as UTF-8: {value!r}") from exc
        self.bytes_(data)

    def path(self, path: RelPath) -> None:
        """Write a repo-relative path: a component count, then each component.

        Args:
            path: a valid path (checked with `engine.paths.validate`).
        """
        try:
            validate(path)
        except FsError as exc:
            raise InvalidInputError(f"invalid path {path!r}: {exc.message}") from exc
        self.uint(len(path))
        for name in path:
            self.str_(name)

    def digest(self, digest: str) -> None:
        """Write a sha256 digest given in lowercase hex as its 32 raw bytes.

        Args:
            digest: 64 lowercase hex characters.
        """
        if _DIGEST_RE.match(digest) is None:
            raise InvalidInputError(f"not a sha256 digest (64 lowercase hex): {digest!r}")
        self._buf += bytes.fromhex(digest)

    def content(self, content: Content) -> None:
        """Write a content, normalized first so equal histories give equal bytes.

        Args:
            content: the content.
        """
        segments = Content.from_segments(content.segments).segments
        self.uint(len(segments))
        for seg in segments:
            if isinstance(seg, Inline):
                self.u8(_TAG_INLINE)
                self.bytes_(seg.data)
            else:
                self.u8(_TAG_BLOB)
                self.digest(seg.digest)
                self.uint(seg.size)

    def finish(self) -> bytes:
        """Return the encoding: everything written, then its CRC32 (4 bytes, big-endian).

        Returns:
            The complete encoding.
        """
        body = bytes(self._buf)
        return body + _CRC.pack(zlib.crc32(body))


class Reader:
    """Read an encoding made by `Writer`; every malformation raises `CodecError`.

    Use `Reader.open` to check the version and CRC of a complete encoding; the
    reader then reads the body field by field, and `finish` rejects trailing bytes.
    """

    def __init__(self, data: bytes, what: str = "data") -> None:
        """Read ``data`` from offset 0, with no version or CRC check.

        Args:
            data: the bytes to read.
            what: what the bytes are, for error messages (``"entry"``).
        """
        self._data = data
        self._pos = 0
        self._what = what

    @classmethod
    def open(cls, data: bytes, *, version: int, what: str) -> Reader:
        """Check the version byte and the CRC trailer, and return a reader of the body.

        The version is checked before the CRC, so an encoding from a newer format is
        reported as such. The returned reader is positioned after the version byte.

        Args:
            data: a complete encoding, as `Writer.finish` returns it.
            version: the only version this caller reads.
            what: what the bytes are, for error messages (``"entry"``).

        Returns:
            A reader over the bytes before the CRC, past the version byte.

        Raises:
            CodecError: empty data, unknown version, too short or CRC mismatch.
        """
        if not data:
            raise CodecError(f"empty {what}: no bytes to decode")
        if data[0] != version:
            raise CodecError(
                f"unknown {what} codec version {data[0]} (this build reads version {version})"
            )
        if len(data) < 1 + CRC_BYTES:
            raise CodecError(
                f"truncated {what}: {len(data)} bytes, too short for a version and a CRC"
            )
        body = data[:-CRC_BYTES]
        (stored,) = _CRC.unpack(data[-CRC_BYTES:])
        actual = zlib.crc32(body)
        if stored != actual:
            raise CodecError(
                f"corrupt {what}: CRC mismatch (stored {stored:08x}, computed {actual:08x})"
            )
        reader = cls(body, what)
        reader._pos = 1
        return reader

    @property
    def offset(self) -> int:
        """The offset of the next byte to read, from the start of the encoding."""
        return self._pos

    @property
    def remaining(self) -> int:
        """The number of bytes not read yet."""
        return len(self._data) - self._pos

    def _fail(self, message: str) -> CodecError:
        return CodecError(f"corrupt {self._what} at offset {self._pos}: {message}")

    def raw(self, n: int, field: str = "bytes") -> bytes:
        """Read exactly ``n`` bytes.

        Args:
            n: how many bytes.
            field: what the bytes are, for the error message.

        Returns:
            The bytes.
        """
        if n > self.remaining:
            raise CodecError(
                f"truncated {self._what} at offset {self._pos}: {field} needs {n} bytes,"
                f" only {self.remaining} left"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        """Read one byte.

        Returns:
            An int in 0..255.
        """
        return self.raw(1, "a byte")[0]

    def uint(self) -> int:
        """Read an unsigned LEB128 varint (at most 10 bytes, minimal, below 2**64).

        Returns:
            The value.
        """
        start = self._pos
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.raw(1, "a varint")[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    self._pos = start
                    raise self._fail("non-minimal varint (redundant trailing zero group)")
                if value > UINT_MAX:
                    self._pos = start
                    raise self._fail("varint value exceeds 2**64-1")
                return value
        self._pos = start
        raise self._fail(f"varint longer than {MAX_VARINT_BYTES} bytes")

    def sint(self) -> int:
        """Read a zigzag-mapped signed varint.

        Returns:
            The value, in -2**63..2**63-1.
        """
        zz = self.uint()
        return zz >> 1 if not zz & 1 else -(zz >> 1) - 1

    def bool_(self) -> bool:
        """Read a boolean byte.

        Returns:
            The boolean.

        Raises:
            CodecError: the byte is neither 0 nor 1.
        """
        byte = self.raw(1, "a boolean")[0]
        if byte > 1:
            self._pos -= 1
            raise self._fail(f"boolean byte is {byte}, not 0 or 1")
        return byte == 1

    def bytes_(self) -> bytes:
        """Read length-prefixed bytes.

        Returns:
            The bytes.
        """
        n = self.uint()
        return self.raw(n, "a length-prefixed field")

    def str_(self) -> str:
        """Read a length-prefixed strict UTF-8 string.

        Returns:
            The string.
        """
        start = self._pos
        data = self.bytes_()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._pos = start
            raise self._fail(f"invalid UTF-8 in string: {exc.reason}") from exc

    def count(self, field: str) -> int:
        """Read an element count, bounded by the bytes left (each element takes one or more).

        Args:
            field: what is counted, for the error message.

        Returns:
            The count.
        """
        start = self._pos
        n = self.uint()
        if n > self.remaining:
            self._pos = start
            raise self._fail(f"{field} count {n} exceeds the {self.remaining} bytes left")
        return n

    def path(self) -> RelPath:
        """Read a repo-relative path and validate every component.

        Returns:
            The path.
        """
        start = self._pos
        path = tuple(self.str_() for _ in range(self.count("path component")))
        try:
            return validate(path)
        except FsError as exc:
            self._pos = start
            raise self._fail(f"invalid path {path!r}: {exc.message}") from exc

    def digest(self) -> str:
        """Read a 32-byte sha256 digest.

        Returns:
            The digest in lowercase hex.
        """
        return self.raw(DIGEST_BYTES, "a blob digest").hex()

    def content(self) -> Content:
        """Read a content and normalize it with `Content.from_segments`.

        Returns:
            The content.
        """
        segments: list[Segment] = []
        for _ in range(self.count("content segment")):
            tag = self.u8()
            if tag == _TAG_INLINE:
                segments.append(Inline(self.bytes_()))
            elif tag == _TAG_BLOB:
                digest = self.digest()
                segments.append(BlobRef(digest, self.uint()))
            else:
                self._pos -= 1
                raise self._fail(f"unknown content segment tag {tag}")
        return Content.from_segments(segments)

    def finish(self) -> None:
        """Check that every byte was read.

        Raises:
            CodecError: bytes are left over.
        """
        if self.remaining:
            raise self._fail(f"{self.remaining} trailing bytes after the last field")


def _valid_terms(count: int) -> bool:
    """Whether a write can carry ``count`` terms: none, or a conflict's (odd, >= 3)."""
    return count == 0 or (count >= 3 and count % 2 == 1)


def _write_op(w: Writer, op: Op, version: int) -> None:
    if isinstance(op, Write | Append | Symlink) and not op.path:
        raise InvalidInputError(f"{type(op).__name__} needs a path below the root, not ()")
    w.u8(_KINDS[type(op)])
    if isinstance(op, Write | Append):
        w.path(op.path)
        w.content(op.content)
        w.uint(op.mode)
        if isinstance(op, Write) and version == _V1:
            if op.terms:
                raise InvalidInputError("a version 1 entry cannot carry write-back terms")
        elif isinstance(op, Write):
            if not _valid_terms(len(op.terms)):
                raise InvalidInputError(
                    f"a write-back has an odd number of terms, at least 3, not {len(op.terms)}"
                )
            w.uint(len(op.terms))
            for term in op.terms:
                w.content(term)
    elif isinstance(op, Mkdir):
        w.path(op.path)
        w.uint(op.mode)
        w.bool_(op.parents)
    elif isinstance(op, Rm):
        w.path(op.path)
        w.bool_(op.recursive)
    elif isinstance(op, Mv):
        w.path(op.src)
        w.path(op.dst)
    elif isinstance(op, Cp):
        w.path(op.src)
        w.path(op.dst)
        w.bool_(op.recursive)
    elif isinstance(op, Chmod):
        w.path(op.path)
        w.uint(op.mode)
    elif isinstance(op, Symlink):
        w.path(op.path)
        w.str_(op.target)
    elif isinstance(op, SetMetadata):
        _write_set_metadata(w, op)
    else:
        w.path(op.path)
        w.sint(op.atime_ms)
        w.sint(op.mtime_ms)


def _write_set_metadata(w: Writer, op: SetMetadata) -> None:
    w.path(op.path)
    w.bool_(op.clear)
    w.uint(len(op.items))
    previous: str | None = None
    for key, value in op.items:
        check_key(key)
        if previous is not None and key <= previous:
            raise InvalidInputError(f"metadata keys not strictly increasing: {key!r}")
        previous = key
        w.str_(key)
        if value is None:
            w.u8(0)
        else:
            if check_value(key, value) is None:
                raise InvalidInputError(f"empty metadata value of {key!r}: use None to delete")
            w.u8(1)
            w.str_(value)


def _read_set_metadata(r: Reader) -> SetMetadata:
    path = r.path()
    clear = r.bool_()
    items: list[tuple[str, str | None]] = []
    for _ in range(r.count("metadata item")):
        at = r.offset
        key = r.str_()
        tag = r.u8()
        value = None
        if tag == 1:
            value = r.str_()
        elif tag != 0:
            raise CodecError(f"corrupt entry at offset {r.offset - 1}: metadata tag {tag}")
        try:
            check_key(key)
            if value is not None and check_value(key, value) is None:
                raise InvalidInputError(f"empty metadata value of {key!r}")
        except InvalidInputError as exc:
            raise CodecError(f"corrupt entry at offset {at}: {exc}") from exc
        if items and key <= items[-1][0]:
            raise CodecError(f"corrupt entry at offset {at}: metadata keys not increasing")
        items.append((key, value))
    return SetMetadata(path, tuple(items), clear)


def _read_node_path(r: Reader) -> RelPath:
    """Read the path of an op that puts a file or symlink there: never the root (``()``)."""
    start = r.offset
    path = r.path()
    if not path:
        raise CodecError(
            f"corrupt entry at offset {start}: a write, append or symlink names the root"
        )
    return path


def _read_terms(r: Reader) -> tuple[Content, ...]:
    start = r.offset
    count = r.count("write-back term")
    if not _valid_terms(count):
        raise CodecError(
            f"corrupt entry at offset {start}: a write-back has an odd number of terms,"
            f" at least 3, not {count}"
        )
    return tuple(r.content() for _ in range(count))


def _read_op(r: Reader, version: int) -> Op:
    kind = r.u8()
    if kind == _KIND_WRITE:
        path, content, mode = _read_node_path(r), r.content(), r.uint()
        return Write(path, content, mode, () if version == _V1 else _read_terms(r))
    if kind == _KIND_APPEND:
        return Append(_read_node_path(r), r.content(), r.uint())
    if kind == _KIND_MKDIR:
        return Mkdir(r.path(), r.uint(), r.bool_())
    if kind == _KIND_RM:
        return Rm(r.path(), r.bool_())
    if kind == _KIND_MV:
        return Mv(r.path(), r.path())
    if kind == _KIND_CP:
        return Cp(r.path(), r.path(), r.bool_())
    if kind == _KIND_CHMOD:
        return Chmod(r.path(), r.uint())
    if kind == _KIND_SYMLINK:
        return Symlink(_read_node_path(r), r.str_())
    if kind == _KIND_UTIMES:
        return Utimes(r.path(), r.sint(), r.sint())
    if kind == _KIND_SET_METADATA and version != _V1:
        return _read_set_metadata(r)
    raise CodecError(f"corrupt entry at offset 1: unknown op kind {kind}")


def encode_entry(entry: Entry) -> bytes:
    """Encode a log entry in the oldest format version that holds it (see module docstring).

    Args:
        entry: the entry.

    Returns:
        The encoding; equal entries give equal bytes.

    Raises:
        InvalidInputError: the entry holds a value the format cannot represent or that
            would not decode (invalid path or author, negative counter, ...).
    """
    try:
        validate_author(entry.author)
    except InvalidInputError as exc:
        raise InvalidInputError(f"cannot encode entry: {exc}") from exc
    version = _V1 if entry.legacy_writeback else CODEC_VERSION
    w = Writer(version)
    _write_op(w, entry.op, version)
    w.str_(entry.author)
    w.uint(entry.counter)
    w.uint(entry.seen)
    return w.finish()


def decode_entry(data: bytes) -> Entry:
    """Decode a log entry encoded by `encode_entry`.

    Args:
        data: the complete encoding.

    Returns:
        The entry.

    Raises:
        CodecError: the bytes are not a valid encoding of a version this build reads
            (`READ_VERSIONS`, see module docstring); never another exception type.
    """
    version = data[0] if data and data[0] in READ_VERSIONS else CODEC_VERSION
    r = Reader.open(data, version=version, what="entry")
    op = _read_op(r, version)
    author_at = r.offset
    author = r.str_()
    try:
        validate_author(author)
    except InvalidInputError as exc:
        raise CodecError(f"corrupt entry at offset {author_at}: {exc}") from exc
    counter = r.uint()
    seen = r.uint()
    r.finish()
    return Entry(op, author, counter, seen, legacy_writeback=version == _V1)

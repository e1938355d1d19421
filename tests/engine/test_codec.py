"""Tests for engine.codec: round trips, determinism, golden bytes and every corruption."""

from __future__ import annotations

import dataclasses
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.codec import (
    CODEC_VERSION,
    UINT_MAX,
    Reader,
    Writer,
    decode_entry,
    encode_entry,
)
from engine.content import BlobRef, Content, Inline
from engine.errors import CodecError, InvalidInputError
from engine.fold import ChangeState, fold
from engine.ops import (
    Append,
    Chmod,
    Cp,
    Entry,
    Logged,
    Mkdir,
    Mv,
    Op,
    Rm,
    SetMetadata,
    Symlink,
    Utimes,
    Write,
)

SINT_MIN = -(2**63)
SINT_MAX = 2**63 - 1

# --------------------------------------------------------------------------- strategies

_plain_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=24
).filter(lambda s: s not in (".", "..") and len(s.encode("utf-8")) <= 255)
_long_names = st.integers(min_value=1, max_value=255).map(lambda n: "x" * n)
_wide_names = st.integers(min_value=1, max_value=63).map(lambda n: "\U0001f600" * n)
_edge_names = st.sampled_from(["...", ".a", "a.", " ", "\n", "\\", "é", "名前", ".git"])
names = st.one_of(_plain_names, _long_names, _wide_names, _edge_names)
paths = st.lists(names, max_size=5).map(tuple)
# a file or symlink cannot be the root: their paths have a component
node_paths = st.lists(names, min_size=1, max_size=5).map(tuple)

uints = st.integers(min_value=0, max_value=UINT_MAX)
sints = st.integers(min_value=SINT_MIN, max_value=SINT_MAX)
modes = st.one_of(st.integers(min_value=0, max_value=0o7777), uints)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
segments = st.one_of(
    st.binary(max_size=64).map(Inline),
    st.builds(BlobRef, digests, uints),
)
contents = st.lists(segments, max_size=6).map(Content.from_segments)
authors = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
# a symlink target is verbatim: it may hold "/", NUL, "..", anything but surrogates
targets = st.text(st.characters(codec="utf-8"), max_size=80)

# a write-back carries an odd number of terms, at least 3; a plain write none
write_terms = st.one_of(
    st.just(()),
    st.integers(min_value=1, max_value=3).flatmap(
        lambda n: st.lists(contents, min_size=2 * n + 1, max_size=2 * n + 1).map(tuple)
    ),
)
ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(Write, node_paths, contents, modes, write_terms),
    st.builds(Append, node_paths, contents, modes),
    st.builds(Mkdir, paths, modes, st.booleans()),
    st.builds(Rm, paths, st.booleans()),
    st.builds(Mv, paths, paths),
    st.builds(Cp, paths, paths, st.booleans()),
    st.builds(Chmod, paths, modes),
    st.builds(Symlink, node_paths, targets),
    st.builds(Utimes, paths, sints, sints),
)
current_entries = st.builds(Entry, ops, authors, uints, uints)


def _v1(entry: Entry) -> Entry:
    """``entry`` as a version 1 entry (no write-back terms) decodes."""
    op = dataclasses.replace(entry.op, terms=()) if isinstance(entry.op, Write) else entry.op
    return dataclasses.replace(entry, op=op, legacy_writeback=True)


# entries of both versions the codec reads
entries = st.one_of(current_entries, current_entries.map(_v1))

# ---------------------------------------------------------------- hand-built encodings


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def lp(data: bytes) -> bytes:
    return varint(len(data)) + data


def raw_path(*components: bytes) -> bytes:
    return varint(len(components)) + b"".join(lp(c) for c in components)


def seal(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def body(
    kind: int,
    fields: bytes,
    author: bytes = b"m1",
    counter: bytes = b"\x03",
    seen: bytes = b"\x02",
) -> bytes:
    return bytes([CODEC_VERSION, kind]) + fields + lp(author) + counter + seen


RM_A = raw_path(b"a") + b"\x00"  # Rm(("a",), recursive=False) fields
WRITE_KIND = 1
RM_KIND = 4
SYMLINK_KIND = 8


def decode_error(data: bytes) -> str:
    with pytest.raises(CodecError) as info:
        decode_entry(data)
    return str(info.value)


# ------------------------------------------------------------------------ round trips


@given(entries)
def test_round_trip(entry: Entry) -> None:
    data = encode_entry(entry)
    decoded = decode_entry(data)
    assert decoded == entry
    assert structure(decoded) == structure(entry)


@given(entries)
def test_encoding_is_deterministic(entry: Entry) -> None:
    data = encode_entry(entry)
    assert encode_entry(entry) == data
    assert encode_entry(decode_entry(data)) == data


def structure(entry: Entry) -> tuple[object, ...]:
    """Every field of an entry, with contents as their segments.

    `Content.__eq__` compares keys, which ignore a blob's size, so ``==`` on entries
    is coarser than the encoding; this is exact.
    """
    op_fields = tuple(
        value.segments if isinstance(value, Content) else value
        for value in (getattr(entry.op, f.name) for f in dataclasses.fields(entry.op))
    )
    op_fields = tuple(
        tuple(t.segments for t in value)
        if isinstance(value, tuple) and value and isinstance(value[0], Content)
        else value
        for value in op_fields
    )
    return (
        type(entry.op),
        op_fields,
        entry.author,
        entry.counter,
        entry.seen,
        entry.legacy_writeback,
    )


@given(st.data())
def test_encoding_is_injective(data: st.DataObject) -> None:
    a = data.draw(entries)
    b = data.draw(st.one_of(st.just(a), entries))
    assert (encode_entry(a) == encode_entry(b)) == (structure(a) == structure(b))


def test_content_is_normalized_before_encoding() -> None:
    split = Content((Inline(b"a"), Inline(b""), Inline(b"b"), BlobRef("0" * 64, 0)))
    whole = Content.of(b"ab")
    assert encode_entry(Entry(Write(("f",), split), "m", 0, 0)) == encode_entry(
        Entry(Write(("f",), whole), "m", 0, 0)
    )


def test_decoding_normalizes_content() -> None:
    seg_a = b"\x00" + lp(b"a")
    seg_b = b"\x00" + lp(b"b")
    empty = b"\x00" + lp(b"")
    fields = raw_path(b"f") + varint(3) + seg_a + empty + seg_b + varint(0o644) + varint(0)
    decoded = decode_entry(seal(body(WRITE_KIND, fields)))
    assert isinstance(decoded.op, Write)
    assert decoded.op.content.segments == (Inline(b"ab"),)


# --------------------------------------------------------------------- golden bytes

BLOB = "fa2c8cc4f28176bbeed4b736df569a34c79cd3723e9ec42f9674b4d46ac6b8b8"  # sha256(b"blob")
# Pinned, hand-checked bytes (spaces separate fields; bytes.fromhex ignores them):
# version, kind, op fields, author, counter, seen, CRC32. A write's last field is its
# write-back terms (a count, then contents).
GOLDEN: list[tuple[Entry, str]] = [
    (
        Entry(Write(("a", "b.txt"), Content.of(b"hi")), "m1", 3, 2),
        "02 01 02.0161.05622e747874 01.00.026869 a403 00 026d31 03 02 63d07d72",
    ),
    (
        Entry(
            Write(
                ("f",),
                Content.of(b"B"),
                terms=(Content.of(b"a"), Content(), Content((BlobRef(BLOB, 300),))),
            ),
            "m1",
            4,
            3,
        ),
        f"02 01 01.0166 01.00.0142 a403 03.01.00.0161.00.01.01.{BLOB}.ac02 026d31 04 03 8a6f8745",
    ),
    (
        Entry(Append(("log",), Content((BlobRef(BLOB, 300), Inline(b"z")))), "w-2", 0, 0),
        f"02 02 01.036c6f67 02.01.{BLOB}.ac02.00.017a a403 03772d32 00 00 ece4bbe7",
    ),
    (
        Entry(Mkdir(("d", "e"), 0o700, parents=True), "m1", 1, 0),
        "02 03 02.0164.0165 c003 01 026d31 01 00 eeda68b1",
    ),
    (
        Entry(Rm(("d",), recursive=True), "m1", 127, 128),
        "02 04 01.0164 01 026d31 7f 8001 5a8cfb79",
    ),
    (
        Entry(Mv(("a",), ("b",)), "m1", 0, 0),
        "02 05 01.0161 01.0162 026d31 00 00 2b1bf3a2",
    ),
    (
        Entry(Cp(("a",), ("b",), recursive=False), "m1", 0, 0),
        "02 06 01.0161 01.0162 00 026d31 00 00 a5e3245e",
    ),
    (
        Entry(Chmod(("x",), 0o755), "m1", 0, 0),
        "02 07 01.0178 ed03 026d31 00 00 4b1ffe4b",
    ),
    (
        Entry(Symlink(("l",), "../t"), "m1", 0, 0),
        "02 08 01.016c 042e2e2f74 026d31 00 00 c0b641c1",
    ),
    (
        Entry(Utimes(("u",), -1, 1000), "m1", 0, 0),
        "02 09 01.0175 01 d00f 026d31 00 00 66e3b92b",
    ),
    (
        Entry(SetMetadata(("f",), (("owner", "agent"), ("status", None)), clear=True), "m1", 0, 0),
        "02 0a 01.0166 01 02 05.6f776e6572 01.05.6167656e74 06.737461747573 00"
        " 026d31 00 00 10d7eb22",
    ),
]

# Version 1 bytes, pinned before version 2 (they must decode as they did, forever).
GOLDEN_V1: list[tuple[Entry, str]] = [
    (
        Entry(Write(("a", "b.txt"), Content.of(b"hi")), "m1", 3, 2),
        "01 01 02.0161.05622e747874 01.00.026869 a403 026d31 03 02 49cae502",
    ),
    (
        Entry(Append(("log",), Content((BlobRef(BLOB, 300), Inline(b"z")))), "w-2", 0, 0),
        f"01 02 01.036c6f67 02.01.{BLOB}.ac02.00.017a a403 03772d32 00 00 ee0a413d",
    ),
    (
        Entry(Mkdir(("d", "e"), 0o700, parents=True), "m1", 1, 0),
        "01 03 02.0164.0165 c003 01 026d31 01 00 ffa702c8",
    ),
    (
        Entry(Rm(("d",), recursive=True), "m1", 127, 128),
        "01 04 01.0164 01 026d31 7f 8001 2d122989",
    ),
    (
        Entry(Mv(("a",), ("b",)), "m1", 0, 0),
        "01 05 01.0161 01.0162 026d31 00 00 96d19f6c",
    ),
    (
        Entry(Cp(("a",), ("b",), recursive=False), "m1", 0, 0),
        "01 06 01.0161 01.0162 00 026d31 00 00 d9820185",
    ),
    (
        Entry(Chmod(("x",), 0o755), "m1", 0, 0),
        "01 07 01.0178 ed03 026d31 00 00 3c812cbb",
    ),
    (
        Entry(Symlink(("l",), "../t"), "m1", 0, 0),
        "01 08 01.016c 042e2e2f74 026d31 00 00 d1cb2bb8",
    ),
    (
        Entry(Utimes(("u",), -1, 1000), "m1", 0, 0),
        "01 09 01.0175 01 d00f 026d31 00 00 db29d5e5",
    ),
]


def golden_bytes(golden: str) -> bytes:
    return bytes.fromhex(golden.replace(".", ""))


@pytest.mark.parametrize(("entry", "golden"), GOLDEN)
def test_golden_encoding(entry: Entry, golden: str) -> None:
    assert encode_entry(entry) == golden_bytes(golden)
    assert structure(decode_entry(golden_bytes(golden))) == structure(entry)


@pytest.mark.parametrize(("entry", "golden"), GOLDEN_V1)
def test_version_1_entries_still_decode_and_encode_back(entry: Entry, golden: str) -> None:
    decoded = decode_entry(golden_bytes(golden))
    assert decoded.legacy_writeback  # the fold treats it as version 1 did
    assert structure(decoded) == structure(dataclasses.replace(entry, legacy_writeback=True))
    assert encode_entry(decoded) == golden_bytes(golden)


@pytest.mark.parametrize(("table", "version"), [(GOLDEN, 2), (GOLDEN_V1, 1)], ids=["v2", "v1"])
def test_golden_covers_every_op_kind(table: list[tuple[Entry, str]], version: int) -> None:
    assert {golden_bytes(golden)[0] for _, golden in table} == {version}
    kinds = {golden_bytes(golden)[1] for _, golden in table}
    # Version 2 added kind 10 (SetMetadata); version 1 has kinds 1..9.
    assert kinds == set(range(1, 11 if version == 2 else 10))
    assert {type(entry.op) for entry, _ in table} - {SetMetadata} == {
        Write,
        Append,
        Mkdir,
        Rm,
        Mv,
        Cp,
        Chmod,
        Symlink,
        Utimes,
    }


# ---------------------------------------------------------- corruption: any byte, any cut


@given(entries, st.data())
def test_flipping_any_byte_is_a_codec_error(entry: Entry, data: st.DataObject) -> None:
    encoded = encode_entry(entry)
    pos = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    corrupt = bytearray(encoded)
    corrupt[pos] ^= mask
    with pytest.raises(CodecError):
        decode_entry(bytes(corrupt))


@given(entries, st.data())
def test_truncating_anywhere_is_a_codec_error(entry: Entry, data: st.DataObject) -> None:
    encoded = encode_entry(entry)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CodecError):
        decode_entry(encoded[:cut])


@given(entries)
def test_truncated_body_with_valid_crc_is_a_codec_error(entry: Entry) -> None:
    encoded_body = encode_entry(entry)[:-4]
    for cut in range(1, len(encoded_body)):
        message = decode_error(seal(encoded_body[:cut]))
        assert "truncated" in message or "exceeds" in message, message


@given(st.binary(max_size=64))
def test_arbitrary_sealed_bytes_decode_or_raise_codec_error(junk: bytes) -> None:
    data = seal(bytes([CODEC_VERSION]) + junk)
    try:
        entry = decode_entry(data)
    except CodecError:
        return
    assert decode_entry(encode_entry(entry)) == entry


# -------------------------------------------------------------- corruption: each case


def test_empty_input() -> None:
    assert "empty" in decode_error(b"")


@pytest.mark.parametrize("version", [0, 3, 7, 255])
def test_unknown_version_names_the_version(version: int) -> None:
    good = encode_entry(Entry(Rm(("a",)), "m1", 0, 0))
    message = decode_error(seal(bytes([version]) + good[1:-4]))
    assert f"version {version}" in message
    assert "unknown" in message
    # checked before the CRC: a newer format is not reported as corruption
    assert "version 9" in decode_error(bytes([9]))


def test_crc_mismatch() -> None:
    good = encode_entry(Entry(Rm(("a",)), "m1", 0, 0))
    assert decode_entry(good) == Entry(Rm(("a",)), "m1", 0, 0)
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    assert "CRC mismatch" in decode_error(bad)
    middle = bytearray(good)
    middle[3] ^= 0x40
    assert "CRC mismatch" in decode_error(bytes(middle))


@pytest.mark.parametrize("data", [b"\x01", b"\x01\x00", b"\x01\x00\x00\x00"])
def test_too_short_for_crc(data: bytes) -> None:
    assert "truncated" in decode_error(data)


def test_version_only_with_crc_is_truncated() -> None:
    assert "truncated" in decode_error(seal(b"\x01"))


def test_trailing_bytes() -> None:
    good = body(RM_KIND, RM_A)
    assert decode_entry(seal(good)) == Entry(Rm(("a",)), "m1", 3, 2)
    assert "trailing" in decode_error(seal(good + b"\x00"))
    assert "trailing" in decode_error(seal(good + b"\x01\x02\x03"))


@pytest.mark.parametrize("kind", [0, 11, 42, 255])
def test_unknown_op_kind(kind: int) -> None:
    message = decode_error(seal(body(kind, RM_A)))
    assert f"unknown op kind {kind}" in message


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80", b"\xf0\x9f\x98"])
def test_invalid_utf8_in_path(bad: bytes) -> None:
    assert "UTF-8" in decode_error(seal(body(RM_KIND, raw_path(bad) + b"\x00")))


def test_invalid_utf8_in_symlink_target() -> None:
    fields = raw_path(b"l") + lp(b"\xfe\xfe")
    assert "UTF-8" in decode_error(seal(body(SYMLINK_KIND, fields)))


def test_invalid_utf8_in_author() -> None:
    assert "UTF-8" in decode_error(seal(body(RM_KIND, RM_A, author=b"m\xff")))


@pytest.mark.parametrize(
    "component",
    [b"", b".", b"..", b"a/b", b"a\x00b", b"x" * 256, "\u00e9".encode() * 128],
)
def test_invalid_path_component(component: bytes) -> None:
    message = decode_error(seal(body(RM_KIND, raw_path(b"ok", component) + b"\x00")))
    assert "invalid path" in message


@pytest.mark.parametrize(
    "author", [b"", b"a b", b"m.1", b"a/b", b"x" * 65, "\u00e9".encode(), b"m\x00"]
)
def test_invalid_author(author: bytes) -> None:
    message = decode_error(seal(body(RM_KIND, RM_A, author=author)))
    assert "author" in message


def test_longest_valid_author_and_name_decode() -> None:
    fields = raw_path(b"x" * 255) + b"\x00"
    entry = decode_entry(seal(body(RM_KIND, fields, author=b"a" * 64)))
    assert entry == Entry(Rm(("x" * 255,)), "a" * 64, 3, 2)


def test_varint_longer_than_ten_bytes() -> None:
    message = decode_error(seal(body(RM_KIND, RM_A, counter=b"\x80" * 10 + b"\x01")))
    assert "longer than 10 bytes" in message
    message = decode_error(seal(body(RM_KIND, RM_A, counter=b"\xff" * 11)))
    assert "longer than 10 bytes" in message


def test_varint_above_u64_max() -> None:
    top = b"\xff" * 9 + b"\x01"
    assert decode_entry(seal(body(RM_KIND, RM_A, counter=top))).counter == UINT_MAX
    message = decode_error(seal(body(RM_KIND, RM_A, counter=b"\xff" * 9 + b"\x02")))
    assert "exceeds" in message


@pytest.mark.parametrize("overlong", [b"\x80\x00", b"\x83\x80\x00", b"\xff" * 9 + b"\x00"])
def test_non_minimal_varint(overlong: bytes) -> None:
    assert "non-minimal" in decode_error(seal(body(RM_KIND, RM_A, seen=overlong)))


def test_truncated_varint() -> None:
    assert "truncated" in decode_error(seal(body(RM_KIND, RM_A, counter=b"\x80", seen=b"")))


@pytest.mark.parametrize("short", [0, 1, 31])
def test_blob_digest_not_32_bytes(short: int) -> None:
    fields = raw_path(b"f") + varint(1) + b"\x01" + b"\xab" * short
    message = decode_error(seal(bytes([CODEC_VERSION, WRITE_KIND]) + fields))
    assert "blob digest" in message
    assert "truncated" in message


def test_blob_segment_decodes() -> None:
    fields = (
        raw_path(b"f") + varint(1) + b"\x01" + bytes(range(32)) + varint(9) + varint(0) + varint(0)
    )
    entry = decode_entry(seal(body(WRITE_KIND, fields)))
    assert entry.op == Write(("f",), Content((BlobRef(bytes(range(32)).hex(), 9),)), 0)


def test_unknown_segment_tag() -> None:
    fields = raw_path(b"f") + varint(1) + b"\x02" + lp(b"x") + varint(0)
    assert "segment tag 2" in decode_error(seal(body(WRITE_KIND, fields)))


@pytest.mark.parametrize("byte", [2, 0x80, 0xFF])
def test_boolean_not_zero_or_one(byte: int) -> None:
    message = decode_error(seal(body(RM_KIND, raw_path(b"a") + bytes([byte]))))
    assert f"boolean byte is {byte}" in message


def test_count_beyond_remaining_bytes() -> None:
    fields = varint(2**40) + lp(b"a") + b"\x00"
    assert "exceeds" in decode_error(seal(body(RM_KIND, fields)))


def test_length_beyond_remaining_bytes() -> None:
    fields = varint(1) + varint(1000) + b"abc"
    assert "truncated" in decode_error(seal(body(RM_KIND, fields)))


# ------------------------------------------------------------------- Writer and Reader


@given(uints)
def test_uint_round_trip_and_minimal(n: int) -> None:
    w = Writer(7)
    w.uint(n)
    data = w.finish()
    r = Reader.open(data, version=7, what="test")
    assert r.uint() == n
    r.finish()
    assert len(data) - 5 == max(1, -(-n.bit_length() // 7))


@given(sints)
def test_sint_round_trip(n: int) -> None:
    w = Writer(1)
    w.sint(n)
    r = Reader.open(w.finish(), version=1, what="test")
    assert r.sint() == n
    r.finish()


@pytest.mark.parametrize(
    ("n", "encoded"), [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-64, b"\x7f"), (64, b"\x80\x01")]
)
def test_zigzag(n: int, encoded: bytes) -> None:
    w = Writer(1)
    w.sint(n)
    assert w.finish()[1:-4] == encoded


def test_writer_reader_all_primitives() -> None:
    content = Content((Inline(b"abc"), BlobRef(BLOB, 5)))
    w = Writer(3)
    w.u8(200)
    w.bool_(True)
    w.bool_(False)
    w.bytes_(b"\x00\xff")
    w.str_("héllo")
    w.path(("a", "b"))
    w.path(())
    w.content(content)
    w.raw(b"xy")
    data = w.finish()
    assert data[0] == 3
    assert data[-4:] == zlib.crc32(data[:-4]).to_bytes(4, "big")
    r = Reader.open(data, version=3, what="test")
    assert r.offset == 1
    assert r.u8() == 200
    assert r.bool_() is True
    assert r.bool_() is False
    assert r.bytes_() == b"\x00\xff"
    assert r.str_() == "héllo"
    assert r.path() == ("a", "b")
    assert r.path() == ()
    assert r.content() == content
    assert r.raw(2) == b"xy"
    assert r.remaining == 0
    r.finish()
    with pytest.raises(CodecError, match="truncated"):
        r.u8()


def test_reader_open_checks_requested_version() -> None:
    data = Writer(2).finish()
    Reader.open(data, version=2, what="snapshot").finish()
    with pytest.raises(CodecError, match="unknown snapshot codec version 2"):
        Reader.open(data, version=1, what="snapshot")


@pytest.mark.parametrize("n", [-1, UINT_MAX + 1, 2**80])
def test_writer_rejects_out_of_range_uint(n: int) -> None:
    with pytest.raises(InvalidInputError):
        Writer(1).uint(n)


@pytest.mark.parametrize("n", [SINT_MIN - 1, SINT_MAX + 1])
def test_writer_rejects_out_of_range_sint(n: int) -> None:
    with pytest.raises(InvalidInputError):
        Writer(1).sint(n)


@pytest.mark.parametrize("digest", ["A" * 64, "0" * 63, "0" * 65, "g" * 64, ""])
def test_writer_rejects_bad_digest(digest: str) -> None:
    with pytest.raises(InvalidInputError):
        Writer(1).content(Content((BlobRef(digest, 1),)))


@pytest.mark.parametrize(
    "entry",
    [
        Entry(Rm(("a",)), "bad author", 0, 0),
        Entry(Rm(("a",)), "", 0, 0),
        Entry(Rm(("a", "..")), "m1", 0, 0),
        Entry(Mv(("a",), ("b/c",)), "m1", 0, 0),
        Entry(Rm(("a",)), "m1", -1, 0),
        Entry(Rm(("a",)), "m1", 0, UINT_MAX + 1),
        Entry(Chmod(("a",), -1), "m1", 0, 0),
        Entry(Utimes(("a",), SINT_MAX + 1, 0), "m1", 0, 0),
        Entry(Symlink(("a",), "\udcff"), "m1", 0, 0),
    ],
)
def test_encode_rejects_unrepresentable_entries(entry: Entry) -> None:
    with pytest.raises(InvalidInputError):
        encode_entry(entry)


# ------------------------------------------------- decoding and folding agree (issue 13)


@pytest.mark.parametrize("kind", [WRITE_KIND, 2, SYMLINK_KIND])
def test_a_file_or_symlink_at_the_root_is_refused_at_decode(kind: int) -> None:
    # Write(()), Append(()) and Symlink(()) used to decode and then fail in the fold.
    tail = varint(0) + varint(0o644) if kind != SYMLINK_KIND else lp(b"t")
    message = decode_error(seal(body(kind, raw_path() + tail)))
    assert "names the root" in message
    assert "offset 2" in message


@pytest.mark.parametrize(
    "op", [Write((), Content.of(b"x")), Append((), Content()), Symlink((), "t")]
)
def test_a_file_or_symlink_at_the_root_is_not_encoded(op: Op) -> None:
    with pytest.raises(InvalidInputError, match=r"path below the root"):
        encode_entry(Entry(op, "m1", 1, 0))


def _seeded_state() -> ChangeState:
    """A state holding each kind of node and a conflict, for entries to fold into."""
    state = ChangeState()
    setup: list[tuple[str, int, Op]] = [
        ("s", 0, Mkdir(("d", "e"), parents=True)),
        ("s", 1, Write(("d", "f"), Content.of(b"f\n"))),
        ("s", 2, Symlink(("l",), "d/f")),
        ("s", 3, Write(("a",), Content.of(b"one\n"))),
        ("t", 3, Write(("a",), Content.of(b"two\n"))),  # races: a conflict
    ]
    for seq, (author, seen, op) in enumerate(setup, 1):
        fold(state, Logged(seq, 1_000 + seq, Entry(op, author, seq, seen)))
    return state


def _folds(entry: Entry) -> None:
    for state in (ChangeState(), _seeded_state()):
        seq = state.seq + 1
        fold(state, Logged(seq, 1_000 + seq, entry))
        assert state.seq == seq


@given(entries)
def test_every_entry_that_encodes_folds_into_any_state(entry: Entry) -> None:
    _folds(decode_entry(encode_entry(entry)))


@given(entries, st.data())
def test_every_entry_the_decoder_accepts_folds(entry: Entry, data: st.DataObject) -> None:
    # The first path made the root's, then bytes changed, with the CRC recomputed:
    # whatever still decodes must fold.
    encoded = bytearray(encode_entry(entry)[:-4])
    first = entry.op.src if isinstance(entry.op, Mv | Cp) else entry.op.path
    if data.draw(st.booleans()):
        encoded[2 : 2 + len(raw_path(*(n.encode() for n in first)))] = raw_path()
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        pos = data.draw(st.integers(min_value=1, max_value=len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = decode_entry(seal(bytes(encoded)))
    except CodecError:
        return
    _folds(decoded)


@given(st.binary(max_size=48))
def test_arbitrary_bytes_the_decoder_accepts_fold(junk: bytes) -> None:
    for kind in range(1, 10):
        try:
            decoded = decode_entry(seal(bytes([CODEC_VERSION, kind]) + junk))
        except CodecError:
            continue
        _folds(decoded)


# ------------------------------------------------------------ write-back terms (v2)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_a_write_back_with_an_even_or_single_term_count_is_corrupt(count: int) -> None:
    terms = varint(count) + (b"\x00") * count  # each an empty content
    fields = raw_path(b"f") + varint(0) + varint(0o644) + terms
    assert "odd number of terms" in decode_error(seal(body(WRITE_KIND, fields)))


@pytest.mark.parametrize("count", [1, 2, 4])
def test_a_write_back_with_a_bad_term_count_is_not_encoded(count: int) -> None:
    op = Write(("f",), Content(), terms=(Content(),) * count)
    with pytest.raises(InvalidInputError, match="odd number of terms"):
        encode_entry(Entry(op, "m1", 1, 0))


def test_a_version_1_entry_cannot_carry_terms() -> None:
    op = Write(("f",), Content(), terms=(Content(),) * 3)
    with pytest.raises(InvalidInputError, match="version 1"):
        encode_entry(Entry(op, "m1", 1, 0, legacy_writeback=True))

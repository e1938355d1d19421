"""Tests for engine.conflicts: jj snapshot-style conflict markers, rendered and parsed."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.conflicts import MIN_MARKER_LEN, marker_length, materialize, parse

# --- pinned renderings -------------------------------------------------------------


def test_two_sides_one_base_exact_bytes() -> None:
    sides = [b"content from one writer\n", b"content from another writer\n"]
    bases = [b"previous content\n"]
    expected = (
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"content from one writer\n"
        b"------- base\n"
        b"previous content\n"
        b"+++++++ side #2\n"
        b"content from another writer\n"
        b">>>>>>> conflict 1 of 1 ends\n"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_missing_final_newline_exact_bytes() -> None:
    sides = [b"grapefruit", b"grape\n"]
    bases = [b"grape"]
    expected = (
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1 (no terminating newline)\n"
        b"grapefruit\n"
        b"------- base (no terminating newline)\n"
        b"grape\n"
        b"+++++++ side #2\n"
        b"grape\n"
        b"\n"
        b">>>>>>> conflict 1 of 1 ends"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_marker_like_content_lengthens_markers() -> None:
    sides = [b"x\n=======\none\n", b"x\ntwo\n"]
    bases = [b"x\n"]
    expected = (
        b"x\n"
        b"<<<<<<<<<<< conflict 1 of 1\n"
        b"+++++++++++ side #1\n"
        b"=======\n"
        b"one\n"
        b"----------- base\n"
        b"+++++++++++ side #2\n"
        b"two\n"
        b">>>>>>>>>>> conflict 1 of 1 ends\n"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_content_that_looks_like_a_whole_block_stays_content() -> None:
    fake = b"<<<<<<< conflict 1 of 1\n+++++++ side #1\n>>>>>>> conflict 1 of 1 ends\n"
    sides = [fake, b"real\n"]
    bases = [b""]
    out = materialize(sides, bases)
    assert out.startswith(b"<<<<<<<<<<< conflict 1 of 1\n+++++++++++ side #1\n" + fake)
    assert parse(out, 2) == (sides, bases)


def test_crlf_terms_use_crlf_markers() -> None:
    sides = [b"a\r\nx\r\n", b"b\r\nx\r\n"]
    bases = [b"c\r\nx\r\n"]
    expected = (
        b"<<<<<<< conflict 1 of 1\r\n"
        b"+++++++ side #1\r\n"
        b"a\r\n"
        b"------- base\r\n"
        b"c\r\n"
        b"+++++++ side #2\r\n"
        b"b\r\n"
        b">>>>>>> conflict 1 of 1 ends\r\n"
        b"x\r\n"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_crlf_with_missing_final_newline() -> None:
    sides = [b"a\r\nb", b"a\r\nc\r\n"]
    bases = [b"a\r\n"]
    expected = (
        b"a\r\n"
        b"<<<<<<< conflict 1 of 1\r\n"
        b"+++++++ side #1 (no terminating newline)\r\n"
        b"b\r\n"
        b"------- base\r\n"
        b"\r\n"
        b"+++++++ side #2\r\n"
        b"c\r\n"
        b"\r\n"
        b">>>>>>> conflict 1 of 1 ends"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_mixed_line_endings_fall_back_to_lf() -> None:
    out = materialize([b"a\r\n", b"b\n"], [b""])
    assert out == (
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"a\r\n"
        b"------- base\n"
        b"+++++++ side #2\n"
        b"b\n"
        b">>>>>>> conflict 1 of 1 ends\n"
    )


def test_common_prefix_and_suffix_stay_outside_the_block() -> None:
    sides = [b"head\ncommon\nA\ntail\n", b"head\ncommon\nB\ntail\n"]
    bases = [b"head\ncommon\nO\ntail\n"]
    expected = (
        b"head\ncommon\n"
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"A\n"
        b"------- base\n"
        b"O\n"
        b"+++++++ side #2\n"
        b"B\n"
        b">>>>>>> conflict 1 of 1 ends\n"
        b"tail\n"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_prefix_and_suffix_do_not_overlap() -> None:
    # "a\n" is both a full prefix and a full suffix of the base; it is counted once.
    sides = [b"a\nb\na\n", b"a\nc\na\n"]
    bases = [b"a\n"]
    expected = (
        b"a\n"
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"b\na\n"
        b"------- base\n"
        b"+++++++ side #2\n"
        b"c\na\n"
        b">>>>>>> conflict 1 of 1 ends\n"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_common_final_line_without_newline_is_suffix() -> None:
    sides = [b"x\nend", b"y\nend"]
    bases = [b"z\nend"]
    expected = (
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"x\n"
        b"------- base\n"
        b"z\n"
        b"+++++++ side #2\n"
        b"y\n"
        b">>>>>>> conflict 1 of 1 ends\n"
        b"end"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 2) == (sides, bases)


def test_three_sides_number_the_bases() -> None:
    sides = [b"one\n", b"two\n", b"three\n"]
    bases = [b"base1\n", b"base2\n"]
    expected = (
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"one\n"
        b"------- base #1\n"
        b"base1\n"
        b"+++++++ side #2\n"
        b"two\n"
        b"------- base #2\n"
        b"base2\n"
        b"+++++++ side #3\n"
        b"three\n"
        b">>>>>>> conflict 1 of 1 ends\n"
    )
    assert materialize(sides, bases) == expected
    assert parse(expected, 3) == (sides, bases)
    assert parse(expected, 2) is None


def test_add_add_conflict_has_empty_base_section() -> None:
    out = materialize([b"mine\n", b"theirs\n"], [b""])
    assert out == (
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"mine\n"
        b"------- base\n"
        b"+++++++ side #2\n"
        b"theirs\n"
        b">>>>>>> conflict 1 of 1 ends\n"
    )
    assert parse(out, 2) == ([b"mine\n", b"theirs\n"], [b""])


def test_identical_terms_render_without_corrupting_bytes() -> None:
    # A resolved value is never rendered by callers, but a final line without a newline
    # must not end up glued to the start marker.
    out = materialize([b"a\nb", b"a\nb"], [b"a\nb"])
    assert out == (
        b"a\n"
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"------- base\n"
        b"+++++++ side #2\n"
        b">>>>>>> conflict 1 of 1 ends\n"
        b"b"
    )
    assert parse(out, 2) == ([b"a\nb", b"a\nb"], [b"a\nb"])


def test_materialize_rejects_bad_arity() -> None:
    with pytest.raises(AssertionError):
        materialize([b"a\n"], [])
    with pytest.raises(AssertionError):
        materialize([b"a\n", b"b\n"], [b"c\n", b"d\n"])


# --- marker length -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ([b"plain\n", b""], 7),
        ([b"+\n"], 7),
        ([b"=======\n"], 11),
        ([b"a\n=======", b""], 11),
        ([b"=======\r\n"], 11),
        ([b"======= note\n"], 11),
        ([b"=======\tnote\n"], 11),
        ([b"<<<<<<<< x\n", b"+++\n"], 12),
        ([b"x\n", b"\\\\\\\\\\\\\\\\\\\\\n"], 14),
        ([b"%%%%%%%%%\n"], 13),
        ([b"||||||||\n"], 12),
        ([b"---------\n", b"--------------\n"], 18),
        ([b"========x\n"], 7),
        ([b"=======\x0b\n"], 7),
        ([b" =======\n"], 7),
        ([b"#######\n"], 7),
    ],
)
def test_marker_length(terms: list[bytes], expected: int) -> None:
    assert marker_length(terms) == expected


# --- parse ---------------------------------------------------------------------------

_TWO_SIDED = materialize([b"A\n", b"B\n"], [b"O\n"])


def test_parse_reads_a_partial_edit_of_one_side() -> None:
    edited = _TWO_SIDED.replace(b"A\n", b"A edited\nmore\n")
    assert parse(edited, 2) == ([b"A edited\nmore\n", b"B\n"], [b"O\n"])


def test_parse_reattaches_text_added_around_the_block() -> None:
    edited = b"new head\n" + _TWO_SIDED + b"new tail"
    assert parse(edited, 2) == (
        [b"new head\nA\nnew tail", b"new head\nB\nnew tail"],
        [b"new head\nO\nnew tail"],
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"just a file\n", id="no-block"),
        pytest.param(_TWO_SIDED.replace(b">>>>>>> conflict 1 of 1 ends\n", b""), id="no-end"),
        pytest.param(_TWO_SIDED + _TWO_SIDED, id="two-blocks"),
        pytest.param(_TWO_SIDED.replace(b"------- base\n", b""), id="one-side-missing-base"),
        pytest.param(_TWO_SIDED.replace(b"------- base", b"+++++++ base"), id="not-alternating"),
        pytest.param(
            _TWO_SIDED.replace(b"+++++++ side #1\n", b"------- side #1\n"), id="starts-with-base"
        ),
        pytest.param(_TWO_SIDED.replace(b"+++++++ side #2\nB\n", b""), id="ends-with-base"),
        pytest.param(
            _TWO_SIDED.replace(b"conflict 1 of 1\n", b"conflict 1 of 1\nstray\n", 1),
            id="text-before-first-section",
        ),
        pytest.param(
            _TWO_SIDED.replace(b"B\n", b"B\n>>>>>>> conflict 1 of 1 ends\n"),
            id="end-marker-twice",
        ),
        pytest.param(_TWO_SIDED.replace(b"B\n", b"B\n%%%%%%% diff\n"), id="diff-section"),
        pytest.param(_TWO_SIDED.replace(b"B\n", b"B\n++++++++ long\n"), id="longer-marker"),
        pytest.param(
            _TWO_SIDED.replace(b"<<<<<<< conflict 1 of 1", b"<<<<<< conflict 1 of 1"),
            id="start-too-short",
        ),
        pytest.param(
            _TWO_SIDED.replace(b">>>>>>> conflict 1 of 1 ends", b">>>>>>>> conflict 1 of 1 ends"),
            id="end-wrong-length",
        ),
        pytest.param(_TWO_SIDED + b"after\n>>>>>>> conflict 1 of 1 ends\n", id="end-after-end"),
        pytest.param(
            materialize([b"a", b"b\n"], [b"c\n"]).replace(b"a\n------- base", b"------- base"),
            id="appended-newline-removed",
        ),
    ],
)
def test_parse_rejects_invalid_renderings(data: bytes) -> None:
    assert parse(data, 2) is None


def test_parse_rejects_wrong_arity() -> None:
    assert parse(_TWO_SIDED, 3) is None
    three = materialize([b"1\n", b"2\n", b"3\n"], [b"a\n", b"b\n"])
    assert parse(three, 2) is None
    assert parse(three, 4) is None


def test_parse_shorter_marker_like_lines_are_content() -> None:
    data = (
        b"<<<<<<<<<<< conflict 1 of 1\n"
        b"+++++++++++ side #1\n"
        b"<<<<<<< conflict 1 of 1\n"
        b"+++++++ side #1\n"
        b"----------- base\n"
        b">>>>>>> conflict 1 of 1 ends\n"
        b"+++++++++++ side #2\n"
        b">>>>>>>>>>> conflict 1 of 1 ends\n"
    )
    assert parse(data, 2) == (
        [b"<<<<<<< conflict 1 of 1\n+++++++ side #1\n", b""],
        [b">>>>>>> conflict 1 of 1 ends\n"],
    )


# --- properties ----------------------------------------------------------------------

_TRICKY_LINES = [
    b"a\n",
    b"b\n",
    b"\n",
    b"\r\n",
    b"x\r\n",
    b"\r",
    b"=======\n",
    b"=======",
    b"<<<<<<< conflict 1 of 1\n",
    b"<<<<<<<<<<< conflict 1 of 1\r\n",
    b"+++++++ side #1\n",
    b"------- base\n",
    b"----------- base #1\n",
    b">>>>>>> conflict 1 of 1 ends\n",
    b">>>>>>> conflict 1 of 1 ends",
    b">>>>>>>>>>> conflict 1 of 1 ends\r\n",
    b"%%%%%%% diff from: x\n",
    b"\\\\\\\\\\\\\\        to: y\n",
    b"|||||||\n",
    b"+\n",
    b"-\n",
    b"++++++++x\n",
    b"-------\t\n",
]

_line = st.sampled_from(_TRICKY_LINES) | st.binary(max_size=6)
_chunk = st.lists(_line, max_size=5).map(b"".join)


@st.composite
def _terms(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Draw sides and bases sharing a drawn prefix and suffix, as racing edits do."""
    num_sides = draw(st.integers(min_value=2, max_value=4))
    prefix = draw(st.lists(_line, max_size=3).map(b"".join))
    suffix = draw(st.lists(_line, max_size=3).map(b"".join))
    middles = draw(st.lists(_chunk, min_size=2 * num_sides - 1, max_size=2 * num_sides - 1))
    terms = [prefix + middle + suffix for middle in middles]
    return terms[0::2], terms[1::2]


def _split(data: bytes) -> list[bytes]:
    return re.findall(rb"[^\n]*\n|[^\n]+", data)


def _expected_affixes(terms: list[bytes]) -> tuple[bytes, bytes]:
    """Compute the common prefix and suffix lines independently of the module."""
    lines = [_split(term) for term in terms]
    shortest = min(len(ls) for ls in lines)
    prefix = 0
    while prefix < shortest and len({ls[prefix] for ls in lines}) == 1:
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and len({ls[-1 - suffix] for ls in lines}) == 1:
        suffix += 1
    first = lines[0]
    return b"".join(first[:prefix]), b"".join(first[len(first) - suffix :])


@settings(max_examples=1000, suppress_health_check=[HealthCheck.filter_too_much])
@given(_terms())
def test_parse_inverts_materialize(terms: tuple[list[bytes], list[bytes]]) -> None:
    sides, bases = terms
    assume(len(set(sides)) > 1)
    out = materialize(sides, bases)
    assert parse(out, len(sides)) == (sides, bases)

    interleaved = [sides[0]]
    for base, side in zip(bases, sides[1:], strict=True):
        interleaved += [base, side]
    length = marker_length(interleaved)
    prefix, suffix = _expected_affixes(interleaved)
    assert out.startswith(prefix + b"<" * length + b" conflict 1 of 1")
    assert out.endswith(suffix)
    body = out[: len(out) - len(suffix)]
    assert body.endswith(b">" * length + b" conflict 1 of 1 ends") or re.search(
        rb">{%d} conflict 1 of 1 ends\r?\n\Z" % length, body
    )
    header = re.compile(rb"(\+{%d}|-{%d}) " % (length, length))
    headers = [ln for ln in _split(out) if header.match(ln)]
    assert len(headers) == 2 * len(sides) - 1
    assert [h[:1] for h in headers] == [b"+", b"-"] * (len(sides) - 1) + [b"+"]
    assert parse(out, len(sides) + 1) is None


@settings(max_examples=300)
@given(st.lists(_line, max_size=5).map(b"".join).map(lambda t: [t]))
def test_marker_length_exceeds_every_marker_like_run(terms: list[bytes]) -> None:
    length = marker_length(terms)
    assert length >= MIN_MARKER_LEN
    for line in _split(terms[0]):
        match = re.match(rb"([<>+\-%\\|=])\1*", line)
        if match and (len(line) == match.end() or line[match.end()] in b" \t\n\x0c\r"):
            assert length >= match.end() + 4


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(_TRICKY_LINES) | st.binary(max_size=6), max_size=12).map(b"".join),
    st.integers(min_value=2, max_value=4),
)
def test_parse_never_raises_on_arbitrary_bytes(data: bytes, num_sides: int) -> None:
    result = parse(data, num_sides)
    if result is not None:
        sides, bases = result
        assert len(sides) == num_sides
        assert len(bases) == num_sides - 1

"""`mesa._web_rooms.FileRoom` and `mesa._web.EventRing` against a fake file (no server)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("pycrdt", reason="mesa web needs the web extra")

from pycrdt import Doc, Text

from mesa import _web_rooms
from mesa._web import EventRing
from mesa._web_rooms import FileRoom, apply_text_diff
from mesa.errors import AuthenticationError, MesaConnectionError


class FakeFile:
    """One file with a sequence number per version, like a change's log."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.seq = 1
        self.writes: list[tuple[str, int]] = []  # (text, seen)

    async def read(self, path: str) -> tuple[bytes | None, int]:
        return self.text.encode(), self.seq

    async def write(self, path: str, data: bytes, seen: int) -> None:
        self.seq += 1
        self.text = data.decode()
        self.writes.append((self.text, seen))

    def external(self, text: str) -> None:
        self.seq += 1
        self.text = text


async def settle(room: FileRoom, file: FakeFile) -> None:
    for _ in range(200):
        await asyncio.sleep(0.01)
        if room.text == file.text == room.file_text:
            return
    raise AssertionError((room.text, file.text, room.file_text))


@pytest.fixture(autouse=True)
def fast_debounce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_web_rooms, "PUSH_DEBOUNCE_S", 0.0)


def browser_types(room: FileRoom, index: int, words: str) -> None:
    """A browser's edit: made on a peer document, arriving as a Yjs update."""
    peer: Doc[Text] = Doc()
    peer.apply_update(room.doc.get_update())
    text = peer.get("text", type=Text)
    before = room.doc.get_state()
    text.insert(index, words)
    room.doc.apply_update(peer.get_update(before))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", "abc"),
        ("abc", ""),
        ("a\nb\nc\n", "a\nB\nc\nd\n"),
        ("héllo wörld", "hello world!"),
        ("a😀b", "a😀Xb😀"),
        # Past CHAR_DIFF_MAX: by lines.
        (
            "".join(f"line {i}\n" for i in range(5000)),
            "".join(f"line {i}\n" for i in range(1, 5001, 2)),
        ),
    ],
)
def test_a_text_diff_turns_old_into_new(old: str, new: str) -> None:
    doc: Doc[Text] = Doc()
    doc["t"] = text = Text(old)
    apply_text_diff(text, old, new)
    assert str(text) == new


async def test_an_agents_write_and_a_browsers_typing_both_survive() -> None:
    file = FakeFile("a\nb\nc\n")
    room = FileRoom("/o/r/f", file.text, file.seq, file.read, file.write)
    room.start()
    try:
        browser_types(room, 0, "X")
        file.external("a\nb\nAGENT\nc\n")  # folded before its event reached the room
        room.file_changed()
        await settle(room, file)
        assert file.text == "Xa\nb\nAGENT\nc\n"
        # Every write the room made said which version it was derived from.
        assert all(seen >= 1 for _, seen in file.writes)
        assert file.writes[-1][1] == file.seq - 1
    finally:
        await room.aclose()


async def test_the_rooms_own_write_coming_back_changes_nothing() -> None:
    file = FakeFile("one\n")
    room = FileRoom("/o/r/f", file.text, file.seq, file.read, file.write)
    room.start()
    try:
        browser_types(room, 4, "two\n")
        await settle(room, file)
        writes = len(file.writes)
        room.file_changed()  # the event of the room's own write
        await asyncio.sleep(0.05)
        assert room.text == file.text == "one\ntwo\n"
        assert len(file.writes) == writes
    finally:
        await room.aclose()


async def test_an_unchanged_conflict_block_is_shown_not_written_back() -> None:
    file = FakeFile("base\n")
    room = FileRoom("/o/r/f", file.text, file.seq, file.read, file.write)
    room.start()
    try:
        block = "<<<<<<< conflict 1 of 1\n+++++++ side #1\na\n>>>>>>> conflict 1 of 1 ends\n"
        file.external(block)
        room.file_changed()
        await settle(room, file)
        assert room.text == block
        assert file.writes == []
    finally:
        await room.aclose()


class FailingFile(FakeFile):
    """A file whose writes raise ``failure`` while it is set (and count the attempts)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.failure: Exception | None = None
        self.attempts = 0

    async def write(self, path: str, data: bytes, seen: int) -> None:
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        await super().write(path, data, seen)


def reporting_room(file: FakeFile) -> tuple[FileRoom, list[tuple[str, str, str]]]:
    """A started room of ``file`` and the list its save reports go to."""
    reports: list[tuple[str, str, str]] = []

    async def on_status(path: str, status: str, reason: str) -> None:
        reports.append((path, status, reason))

    room = FileRoom("/o/r/f", file.text, file.seq, file.read, file.write, on_status)
    room.start()
    return room, reports


async def test_a_write_that_cannot_succeed_is_reported_once_and_not_retried_in_a_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_web_rooms, "RETRY_PAUSE_S", 0.02)
    file = FailingFile("a\n")
    room, reports = reporting_room(file)
    try:
        file.failure = AuthenticationError("token expired at 12:00")
        browser_types(room, 0, "typed ")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if reports:
                break
        await asyncio.sleep(0.2)  # ten retry pauses: none is taken
        assert file.attempts == 1
        assert reports == [("/o/r/f", "failed", "AuthenticationError: token expired at 12:00")]
        assert room.failure == ("failed", "AuthenticationError: token expired at 12:00")
        assert room.text == "typed a\n"  # the browsers keep their text
        # The next edit tries again, with everything typed so far.
        file.failure = None
        browser_types(room, 0, "more ")
        await settle(room, file)
        assert file.text == "more typed a\n"
        assert reports[-1] == ("/o/r/f", "saved", "")
        assert room.failure is None
    finally:
        await room.aclose()


async def test_a_write_while_the_server_is_away_is_retried_and_reported_until_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_web_rooms, "RETRY_PAUSE_S", 0.02)
    file = FailingFile("a\n")
    room, reports = reporting_room(file)
    try:
        file.failure = MesaConnectionError("server unreachable")
        browser_types(room, 0, "typed ")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if file.attempts >= 3:
                break
        assert file.attempts >= 3  # retried by itself, no edit needed
        # Reported once: a retry failing the same way is no news (a long outage must
        # not push the file-change events out of the page's event ring).
        assert reports == [("/o/r/f", "retrying", "MesaConnectionError: server unreachable")]
        file.failure = None
        await settle(room, file)
        assert file.text == "typed a\n"
        for _ in range(100):
            if reports[-1][1] == "saved":
                break
            await asyncio.sleep(0.01)
        assert [status for _, status, _ in reports] == ["retrying", "saved"]
    finally:
        await room.aclose()


async def test_the_event_ring_replays_after_an_id_and_reports_a_gap() -> None:
    ring = EventRing(size=3)
    for i in range(5):
        await ring.add({"path": f"/o/r/{i}", "recursive": False})
    assert [i for i, _ in ring.after(3) or []] == [4, 5]
    assert ring.after(5) == []
    assert ring.after(1) is None  # 2 was dropped: the stream must take a snapshot
    assert [i for i, _ in ring.after(2) or []] == [3, 4, 5]


def test_an_sse_id_of_another_ring_is_a_gap() -> None:
    ring, other = EventRing(), EventRing()
    assert ring.epoch != other.epoch
    assert ring.parse_sse_id(ring.sse_id(0)) == 0
    assert ring.parse_sse_id(other.sse_id(0)) is None
    assert ring.parse_sse_id(ring.sse_id(5)) is None  # beyond what this ring numbered
    assert ring.parse_sse_id("garbage") is None

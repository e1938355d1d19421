"""The ``mesa`` CLI end to end: subprocesses against a private embedded server.

Every failure must be one line on stderr with its documented exit code and no
traceback; every listing survives ``| head -1``; change ids work by any unique prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from mesa import server
from mesa._client import Mesa
from mesa._types import RepoConfig
from mesa.cli import build_parser
from transports.jetstream import blob_bucket, kv_bucket, stream_name

pytestmark = pytest.mark.integration

ORG = "acme"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("cli") / "mesa-home"
    server.ensure_running(home)
    yield home
    server.stop(home)


@pytest.fixture
def env(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a CLI process (and of this one, for SDK calls)."""
    for name in ("MESA_NATS_URL", "MESA_API_KEY", "MESA_REPO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESA_HOME", str(home))
    monkeypatch.setenv("MESA_ORG", ORG)
    return dict(os.environ)


def mesa(
    env: dict[str, str], *args: str, code: int = 0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``mesa ARGS``; check the exit code and that stderr holds no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "mesa", *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


def fails(env: dict[str, str], code: int, *args: str) -> str:
    """Run a command that must fail with ``code``; return its one stderr line."""
    result = mesa(env, *args, code=code)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def head_1(env: dict[str, str], *args: str) -> str:
    """Run ``mesa ARGS | head -1`` in a shell; return the line; no traceback allowed."""
    argv = " ".join(f"'{a}'" for a in args)
    script = f'"{sys.executable}" -m mesa {argv} | head -1'
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == "", result.stderr
    assert len(result.stdout.splitlines()) == 1, result.stdout
    return result.stdout.strip()


def closed_reader(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``mesa ARGS`` with its stdout a pipe nobody reads (closed at once)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        return subprocess.run(
            [sys.executable, "-m", "mesa", *args],
            env=env,
            stdout=write_fd,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_fd)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def write_files(repo: str, files: dict[str, bytes], change_id: str | None = None) -> None:
    client = Mesa(org=ORG)
    config = RepoConfig(repo, change_id=change_id) if change_id else RepoConfig(repo)
    try:
        async with client.fs.mount(repos=[config]) as fs:
            for path, data in files.items():
                await fs.write(f"/{ORG}/{repo}/{path}", data)
    finally:
        await client.transport.aclose()


# -- item 5: help, version, completion ---------------------------------------------------


def test_every_command_has_a_description_and_a_working_help(env: dict[str, str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices)
    assert all(helps.values()), helps
    top = mesa(env, "--help").stdout
    for name, text in helps.items():
        assert name in top
        assert str(text).split()[0] in top
    for name, command in sub.choices.items():
        own = mesa(env, name, "--help").stdout
        assert own.startswith(f"usage: mesa {name}"), own
        assert command.description, name
    start = mesa(env, "server", "start", "--help").stdout
    assert start.startswith("usage: mesa server start")
    assert "in the background" in start
    listing = mesa(env, "server", "--help").stdout
    for action in ("run", "start", "status", "stop"):
        assert f"    {action} " in listing
    assert mesa(env, "--version").stdout.strip().startswith("mesa 0.")


def test_completion_scripts_and_live_completion(env: dict[str, str], tmp_path: Path) -> None:
    assert "_python_argcomplete" in mesa(env, "completion", "bash").stdout
    assert mesa(env, "completion", "zsh").stdout.startswith("#compdef mesa")
    out = tmp_path / "completions"
    live = {
        **env,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": "mesa rep",
        "COMP_POINT": "8",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
    }
    mesa(live)
    assert out.read_text().split() == ["repo"]


def test_usage_errors_are_one_line_with_exit_2(env: dict[str, str]) -> None:
    assert "invalid choice" in fails(env, 2, "nosuchcommand")
    assert "which repo?" in fails(env, 2, "log")
    assert "--limit must be >= 0" in fails(env, 2, "log", "-R", "x", "--limit", "-1")
    assert "invalid org" in fails(env, 2, "demo", "--org", "bad org")


# -- item 1: repos -----------------------------------------------------------------------


def test_repo_create_list_info_delete(env: dict[str, str]) -> None:
    created = mesa(env, "repo", "create", "r1", "--default-bookmark", "trunk").stdout
    assert created == "created acme/r1 (default bookmark trunk)\n"
    mesa(env, "repo", "create", "r2")
    assert "already exists" in fails(env, 1, "repo", "create", "r1")
    assert "invalid" in fails(env, 2, "repo", "create", "bad name")
    rows = [line.split("\t") for line in mesa(env, "repo", "list").stdout.splitlines()]
    by_name = {row[0]: row for row in rows}
    assert by_name["r1"][1:3] == ["trunk", "1"]
    assert head_1(env, "repo", "list").split("\t")[0] == rows[0][0]
    info = mesa(env, "repo", "info", "r1").stdout
    assert "Default bookmark: trunk" in info
    assert "trunk: " in info
    assert "not found" in fails(env, 1, "repo", "info", "nope")
    # No terminal, no --yes: refused; a wrong answer is no confirmation either.
    assert "pass --yes" in fails(env, 2, "repo", "delete", "r2")
    deleted = mesa(env, "repo", "delete", "r2", "--yes")
    assert deleted.stdout == "deleted acme/r2\n"
    assert deleted.stderr == ""  # no progress when piped
    names = [line.split("\t")[0] for line in mesa(env, "repo", "list").stdout.splitlines()]
    assert "r2" not in names
    assert "r1" in names
    assert "not found" in fails(env, 1, "repo", "delete", "r2", "--yes")
    assert "not found" in fails(env, 1, "log", "-R", "r2")
    # Nothing of r2 stays on the server: its stream, record bucket and blob store are gone.
    assert asyncio.run(_streams_of(Path(env["MESA_HOME"]), "r2")) == []
    assert len(asyncio.run(_streams_of(Path(env["MESA_HOME"]), "r1"))) == 3


async def _streams_of(home: Path, repo: str) -> list[str]:
    """The JetStream streams of ``acme/<repo>`` (read with the service's own login)."""
    info = server.status(home)
    assert info is not None
    nc = await nats.connect(info.authenticated_url)
    try:
        names = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    wanted = {stream_name(ORG, repo), f"KV_{kv_bucket(ORG, repo)}", f"OBJ_{blob_bucket(ORG, repo)}"}
    return sorted(s.config.name for s in names if s.config.name in wanted)


def test_repo_delete_on_a_terminal_needs_the_repo_name(env: dict[str, str]) -> None:
    import pty

    mesa(env, "repo", "create", "cf")

    def delete(answer: str) -> subprocess.CompletedProcess[str]:
        leader, follower = pty.openpty()
        try:
            os.write(leader, answer.encode() + b"\n")  # read once the prompt is out
            result = subprocess.run(
                [sys.executable, "-m", "mesa", "repo", "delete", "cf"],
                env=env,
                stdin=follower,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(leader)
            os.close(follower)
        assert "Traceback" not in result.stderr, result.stderr
        assert "Type its name to confirm: " in result.stderr
        return result

    refused = delete("nope")
    assert refused.returncode == 1
    assert refused.stderr.endswith("mesa repo delete: error: not confirmed; nothing deleted\n")
    assert refused.stdout == ""
    assert "cf" in mesa(env, "repo", "list").stdout.split()
    confirmed = delete("cf")
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout == "deleted acme/cf\n"
    assert "cf" not in mesa(env, "repo", "list").stdout.split()


# -- items 2 and 3: status, diff, log ----------------------------------------------------


def test_status_and_diff_with_a_conflict_inline(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "sd")
    run(write_files("sd", {"a.txt": b"one\n", "b.txt": b"bee\n"}))
    status = mesa(env, "status", "-R", "sd").stdout
    assert "Bookmarks: main" in status
    assert "  A a.txt\n" in status
    assert "  A b.txt\n" in status
    patch = mesa(env, "diff", "-R", "sd").stdout
    assert "+++ b/a.txt\n@@ -0,0 +1 @@\n+one\n" in patch
    assert "\x1b[" not in patch  # no colour when piped
    coloured = mesa(env, "diff", "-R", "sd", "--color", "always").stdout
    assert "\x1b[" in coloured
    assert mesa(env, "diff", "-R", "sd", "--name-only").stdout == "A a.txt\nA b.txt\n"
    stat = mesa(env, "diff", "-R", "sd", "--stat").stdout
    assert "a.txt\t+1\t-0\n" in stat
    assert stat.endswith("2 file(s) changed, 2 insertion(s)(+), 0 deletion(s)(-)\n")
    # Two sides edit a.txt; merging them conflicts, shown inline.
    left = mesa(env, "new", "-R", "sd", "-m", "left").stdout.strip()
    right = mesa(env, "new", "-R", "sd", "-m", "right").stdout.strip()
    run(write_files("sd", {"a.txt": b"left\n"}, change_id=left))
    run(write_files("sd", {"a.txt": b"right\n"}, change_id=right))
    mesa(env, "bookmark", "create", "-R", "sd", "left", "-r", left)
    mesa(env, "bookmark", "create", "-R", "sd", "right", "-r", right)
    between = mesa(env, "diff", "-R", "sd", "--from", left, "--to", right).stdout
    assert "-left\n+right\n" in between
    assert "conflicts in 1 path" in fails(env, 1, "merge", "-R", "sd", "right", "--into", "left")
    mesa(env, "merge", "-R", "sd", "right", "--into", "left", "--allow-conflicted")
    status = mesa(env, "status", "-R", "sd", "-r", "left").stdout
    assert "Conflicted files (1):\n  C a.txt\n" in status
    conflicted = mesa(env, "diff", "-R", "sd", "--from", "right", "--to", "left").stdout
    assert "<<<<<<<" in conflicted
    assert ">>>>>>>" in conflicted
    assert "give -r REV, or --from/--to" in fails(
        env, 2, "diff", "-R", "sd", "-r", "left", "--from", "right"
    )


def test_log_shows_every_head_as_a_graph(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "lg")
    main = mesa(env, "bookmark", "list", "-R", "lg").stdout.split()[1]
    one = mesa(env, "new", "-R", "lg", "-m", "child one").stdout.strip()
    two = mesa(env, "new", "-R", "lg", "-m", "child two").stdout.strip()
    log = mesa(env, "log", "-R", "lg").stdout.splitlines()
    # Both children of main (not reachable from the bookmark) are shown, newest first;
    # the graph joins their lanes at main, which is marked @ with its bookmark.
    assert log[0].startswith(f"○ {two[:12]}"), log
    assert log[1].startswith(f"│ ○ {one[:12]}"), log
    assert log[2] == "├─╯", log
    assert log[3].startswith(f"@ {main}"), log
    assert " main " in log[3]
    assert len(log) == 4
    assert len(mesa(env, "log", "-R", "lg", "--limit", "1").stdout.splitlines()) == 1
    only = mesa(env, "log", "-R", "lg", "-r", one[:6]).stdout.splitlines()
    assert [line.split()[1] for line in only] == [one[:12], main]
    assert head_1(env, "log", "-R", "lg").startswith(f"○ {two[:12]}")
    assert head_1(env, "bookmark", "list", "-R", "lg").startswith("main: ")
    assert head_1(env, "show", "-R", "lg").startswith("Change ID: ")
    assert head_1(env, "diff", "-R", "lg", "--stat")
    assert head_1(env, "status", "-R", "lg").startswith("Repo:")


def test_a_closed_reader_ends_every_listing_quietly_with_141(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "bp")
    for args in (
        ("log", "-R", "bp"),
        ("show", "-R", "bp"),
        ("repo", "list"),
        ("repo", "info", "bp"),
        ("bookmark", "list", "-R", "bp"),
        ("status", "-R", "bp"),
        ("diff", "-R", "bp", "--stat"),
        ("--help",),
    ):
        result = closed_reader(env, *args)
        assert result.stderr == b"", (args, result.stderr)
        assert result.returncode in (141, 0), (args, result.returncode)
        if args != ("--help",):
            assert result.returncode == 141, args


def test_every_listing_command_survives_head_1(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "hd")
    mesa(env, "repo", "create", "hd2")
    for name in ("listing-1", "listing-2"):
        mesa(env, "keys", "create", "--name", name, "--scope", "read")
    run(write_files("hd", {"a.txt": b"one\ntwo\n", "b.txt": b"bee\n"}))
    child = mesa(env, "new", "-R", "hd", "-m", "child").stdout.strip()
    mesa(env, "bookmark", "create", "-R", "hd", "zz", "-r", child)
    main = mesa(env, "bookmark", "list", "-R", "hd").stdout.split()[1]
    first_lines = {
        ("repo", "list"): None,
        ("repo", "info", "hd"): "Repo:",
        ("log", "-R", "hd"): "○ ",
        ("show", "-R", "hd"): "Change ID: ",
        ("status", "-R", "hd"): "Repo:",
        ("diff", "-R", "hd"): "diff --git a/a.txt b/a.txt",
        ("diff", "-R", "hd", "--stat"): "a.txt\t+2\t-0",
        ("diff", "-R", "hd", "--name-only"): "A a.txt",
        ("bookmark", "list", "-R", "hd"): f"main: {main}",
        ("keys", "list"): None,
        ("--help",): "usage: mesa",
    }
    for args, start in first_lines.items():
        # Each listing has more than one line, so head really cuts it short.
        assert len(mesa(env, *args).stdout.splitlines()) > 1, args
        line = head_1(env, *args)
        if start is not None:
            assert line.startswith(start), (args, line)


# -- prefix ids ---------------------------------------------------------------------------


def test_change_ids_by_unique_ambiguous_and_unknown_prefix(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "px")
    ids = [mesa(env, "new", "-R", "px").stdout.strip() for _ in range(8)]
    ids += [mesa(env, "bookmark", "list", "-R", "px").stdout.split()[1]]
    full = [i for i in ids if len(i) == 32]
    # A unique prefix, in every command that takes a revision: unique among every change
    # the repo has, `main`'s too (listed with 12 characters, so look no further).
    target = full[0]
    unique = next(
        target[:n] for n in range(1, 13) if sum(i.startswith(target[:n]) for i in ids) == 1
    )
    assert mesa(env, "show", "-R", "px", unique).stdout.startswith(f"Change ID: {target}\n")
    assert mesa(env, "log", "-R", "px", "-r", unique, "-n", "1").stdout.split()[1] == target[:12]
    mesa(env, "bookmark", "create", "-R", "px", "pfx", "-r", target[:12])
    assert f"pfx: {target[:12]}" in mesa(env, "bookmark", "list", "-R", "px").stdout
    # Ambiguous: nine ids over sixteen letters; find a shared first letter or make one.
    letters: dict[str, list[str]] = {}
    for change in full:
        letters.setdefault(change[0], []).append(change)
    while not any(len(v) > 1 for v in letters.values()):
        extra = mesa(env, "new", "-R", "px").stdout.strip()
        letters.setdefault(extra[0], []).append(extra)
    letter, matching = next((k, v) for k, v in letters.items() if len(v) > 1)
    line = fails(env, 2, "show", "-R", "px", letter)
    assert "ambiguous" in line
    for change in matching:
        assert change[:12] in line
    # Unknown: a prefix nothing starts with.
    unknown = next(
        c + "k" * 11
        for c in "klmnopqrstuvwxyz"
        if not any(i.startswith(c + "k" * 11) for i in full)
    )
    assert f"no bookmark or change {unknown!r}" in fails(env, 1, "show", "-R", "px", unknown)
    assert "no bookmark or change" in fails(env, 1, "new", "-R", "px", "kkkkzzzz")


# -- merge and following ------------------------------------------------------------------


def test_merging_an_already_merged_source_is_a_no_op(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "mg")
    session = mesa(env, "new", "-R", "mg", "-m", "session").stdout.strip()
    mesa(env, "bookmark", "create", "-R", "mg", "session", "-r", session)
    run(write_files("mg", {"s.txt": b"s\n"}, change_id=session))
    first = mesa(env, "merge", "-R", "mg", "session", "-m", "x").stdout
    assert first.startswith("merged session into main: ")
    changes = len(mesa(env, "log", "-R", "mg", "-n", "0").stdout.splitlines())
    second = mesa(env, "merge", "-R", "mg", "session", "-m", "x").stdout
    assert second == "nothing to merge: main already contains session\n"
    assert len(mesa(env, "log", "-R", "mg", "-n", "0").stdout.splitlines()) == changes


def test_a_plain_repo_mount_follows_main_across_a_cli_merge(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "fw")
    feature = mesa(env, "new", "-R", "fw", "-m", "feature").stdout.strip()
    mesa(env, "bookmark", "create", "-R", "fw", "feature", "-r", feature)
    run(write_files("fw", {"f.txt": b"feature\n"}, change_id=feature))

    async def scenario() -> None:
        client = Mesa(org=ORG)
        try:
            async with client.fs.mount(repos=["fw"]) as fs:
                before = (await fs.changes.current("fw")).change_id
                await asyncio.to_thread(mesa, env, "merge", "-R", "fw", "feature")
                merged = (await client.bookmarks.get("fw", "main")).change_id
                assert merged != before
                async with asyncio.timeout(10):
                    while (await fs.changes.current("fw")).change_id != merged:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                assert await fs.read("/acme/fw/f.txt") == b"feature\n"
                await fs.write("/acme/fw/after.txt", b"after\n")
        finally:
            await client.transport.aclose()

    run(scenario())
    # The write went into the change main points at now, not the one it left.
    assert "A after.txt" in mesa(env, "diff", "-R", "fw", "--name-only").stdout


# -- errors in CLI words ------------------------------------------------------------------


def test_errors_name_cli_flags_not_sdk_arguments(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "ew")
    root = mesa(env, "bookmark", "list", "-R", "ew").stdout.split()[1]
    child = mesa(env, "new", "-R", "ew").stdout.strip()
    mesa(env, "bookmark", "move", "-R", "ew", "main", "-r", child)
    line = fails(env, 1, "bookmark", "move", "-R", "ew", "main", "-r", root)
    assert "--allow-backwards" in line
    assert "allow_backwards=True" not in line
    remote = {**env, "MESA_NATS_URL": "nats://127.0.0.1:1"}
    line = fails(remote, 2, "log", "-R", "ew")
    assert "set MESA_API_KEY" in line
    assert "api_key=" not in line


def test_a_second_server_on_a_port_is_exit_3(env: dict[str, str]) -> None:
    result = mesa(env, "server", "--port", "24999", code=3)
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith("mesa server: error:")
    ]
    assert "already running" in result.stderr


def test_server_stop_warns_about_live_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesa.fuse import _registry

    home = tmp_path / "home"
    monkeypatch.setenv("MESA_HOME", str(home))
    env = {**os.environ, "MESA_ORG": ORG}
    server.ensure_running(home)
    try:
        path = _registry.record_path("/mnt/x")
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "mountpoint": "/mnt/x", "log_file": None}
        path.write_text(json.dumps(record))
        result = mesa(env, "server", "stop")
        assert result.stdout == "stopped\n"
        assert "warning: 1 mount(s) still use this server (/mnt/x)" in result.stderr
        record["finished"] = True
        path.write_text(json.dumps(record))
        server.ensure_running(home)
        assert mesa(env, "server", "stop").stderr == ""  # a finished mount is no warning
    finally:
        server.stop(home)


def test_mount_refuses_a_non_empty_mount_point(env: dict[str, str], tmp_path: Path) -> None:
    point = tmp_path / "point"
    point.mkdir()
    (point / "keep.txt").write_text("mine")
    line = fails(env, 2, "mount", str(point), "--repo", "app")
    assert "is not empty" in line
    assert "--nonempty" in line


# -- item 7: the demo cleans up ---------------------------------------------------------


def test_demo_removes_its_repo(env: dict[str, str]) -> None:
    result = mesa(env, "demo")
    assert "demo passed" in result.stdout
    assert "deleted repo acme/demo-" in result.stdout
    names = mesa(env, "repo", "list").stdout
    assert "demo-" not in names


# -- item 4: progress on a terminal, quiet when piped -------------------------------------


def on_terminal(env: dict[str, str], *args: str) -> tuple[int, bytes, bytes]:
    """Run ``mesa ARGS`` with stderr a terminal; return exit code, stdout, what stderr showed."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mesa", *args],
            env={**env, "TERM": "xterm", "COLUMNS": "80"},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert b"Traceback" not in seen
    return proc.returncode, proc.stdout, seen


def test_progress_shows_on_a_terminal_only(env: dict[str, str]) -> None:
    mesa(env, "repo", "create", "pg")
    code, out, seen = on_terminal(env, "repo", "delete", "pg", "--yes")
    assert code == 0
    assert out == b"deleted acme/pg\n"
    assert b"deleting acme/pg" in seen  # the spinner's line, cleared when done
    # A merge (of a large tree, possibly) shows its spinner too; piped, nothing.
    mesa(env, "repo", "create", "pm")
    feature = mesa(env, "new", "-R", "pm").stdout.strip()
    mesa(env, "bookmark", "create", "-R", "pm", "feature", "-r", feature)
    run(write_files("pm", {"f.txt": b"f\n"}, change_id=feature))
    code, out, seen = on_terminal(env, "merge", "-R", "pm", "feature")
    assert code == 0
    assert out.startswith(b"merged feature into main: ")
    assert b"merging feature into main" in seen
    mesa(
        env,
        "bookmark",
        "move",
        "-R",
        "pm",
        "feature",
        "-r",
        mesa(env, "new", "-R", "pm", "feature").stdout.strip(),
    )
    piped = mesa(env, "merge", "-R", "pm", "feature")
    assert piped.stderr == ""


def test_mount_specs_resolve_change_prefixes_but_keep_bookmarks(env: dict[str, str]) -> None:
    from mesa.fuse._cli import _resolve_prefixes, parse_repos

    mesa(env, "repo", "create", "ms")
    change = mesa(env, "new", "-R", "ms").stdout.strip()
    mesa(env, "bookmark", "create", "-R", "ms", "lots", "-r", change)
    specs = parse_repos([f"ms@{change[:10]}"], [])
    assert specs[0].bookmark == change[:10]  # a prefix looks like a bookmark name at first
    (resolved,) = run(_resolve_prefixes(ORG, specs))  # type: ignore[misc]
    assert (resolved.change_id, resolved.bookmark) == (change, None)
    (kept,) = run(_resolve_prefixes(ORG, parse_repos(["ms@lots"], ["ms"])))  # type: ignore[misc]
    assert (kept.bookmark, kept.change_id, kept.read_only) == ("lots", None, True)

"""`fs.bash()`: bash over the mount, checked against expected output and a real /bin/bash.

The differential tests run each script twice: through ``fs.bash`` in ``/acme/app/w``
and through the host's ``/bin/bash`` in a temporary directory holding the same files,
and compare stdout and the exit code. The real bash is only the oracle of the test;
``fs.bash`` itself never spawns a process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesa import Bash, ExecResult, MesaFileSystem, WatchEvent
from mesa_sdk import Mesa

W = "/acme/app/w"
FILES = {
    "a.txt": "hello world\nfoo bar\nHello again\n",
    "b.txt": "3\n1\n2\n2\n",
    "csv": "a,b,c\n1,2,3\n4,5,6\n",
    "noeol.txt": "abc",
    "sub/c.py": "print('x')\nimport os\n",
    "sub/deep/d.md": "# title\nimport nothing\n",
}


async def _seed(fs: MesaFileSystem) -> None:
    for name, text in FILES.items():
        path = f"{W}/{name}"
        await fs.mkdir(path.rsplit("/", 1)[0], recursive=True)
        await fs.write(path, text.encode())


@pytest.fixture
async def fs(mesa: Mesa) -> AsyncIterator[MesaFileSystem]:
    async with mesa.fs.mount(repos=["app"]) as mounted:
        await _seed(mounted)
        yield mounted


def _real_bash(script: str, tmp: Path) -> tuple[str, int]:
    for name, text in FILES.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    done = subprocess.run(
        ["/bin/bash", "-c", script],
        cwd=tmp,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        check=False,
        timeout=30,
    )
    return done.stdout, done.returncode


# Scripts whose stdout and exit code must be byte-identical to GNU bash + coreutils.
DIFFERENTIAL = [
    # pipes, lists, exit codes
    "cat a.txt | grep -i hello | wc -l",
    "true && false; echo $?",
    "false || echo recovered",
    "false; echo $?; true; echo $?",
    "grep nothing a.txt; echo $?",
    "exit 3",
    "(exit 4); echo $?",
    "! grep -q foo a.txt; echo $?",
    # redirections and here-docs
    "echo hi > x && echo there >> x && cat x && wc -l < x",
    "echo err >&2; echo out",
    "ls nothere 2>&1 | wc -l",
    "cat a.txt > /dev/null; echo ok",
    "cat <<EOF\nline1 $((1 + 1))\nline2\nEOF",
    "cat <<'EOF'\nraw $HOME\nEOF",
    'while read -r l; do echo "L:$l"; done < b.txt',
    # subshells, variables, command substitution
    "x=1; (x=2; echo $x); echo $x",
    'v=$(cat b.txt | wc -l); echo "lines: $v"',
    'echo "$(echo nested $(echo deep))"',
    "s=hello; echo ${#s} ${s:1:2} ${s/l/L} ${s%lo} ${s#he}",
    "echo ${unset:-default}",
    "echo $((3 * 4 + 1)) $((7 % 3))",
    # globbing
    "echo *.txt",
    "ls sub/*.py",
    'for f in *.txt; do echo "== $f"; head -n 1 "$f"; done',
    # if / for / while / case / functions
    "if test -f a.txt; then echo yes; else echo no; fi",
    "[ -d sub ] && echo dir || echo nodir",
    "x=3; while [ $x -gt 0 ]; do x=$((x-1)); echo $x; done",
    "for i in 1 2 3; do if [ $i -eq 2 ]; then continue; fi; echo $i; done",
    "case a.txt in *.txt) echo text;; *) echo other;; esac",
    'f() { echo "in f $1"; return 3; }; f arg; echo $?',
    # commands
    "cat a.txt b.txt",
    "cat -n b.txt",
    "cat noeol.txt; echo",
    "cat missing; echo $?",
    "ls",
    "ls sub",
    "ls -1 | sort -r",
    "echo -n no newline; echo",
    "echo -e 'a\\tb'",
    "printf '%s-%d\\n' a 1 b 2",
    "printf '%5s|%-3s|\\n' x y",
    "grep -n o a.txt",
    "grep -i HELLO a.txt",
    "grep -c o a.txt; grep -v o a.txt",
    "grep -E 'fo+|again' a.txt",
    "grep -rn import . | sort",
    "grep -rl import . | sort",
    "grep -ril PRINT sub",
    "grep -rn --include='*.py' import . | sort; grep -r os sub/c.py",
    "grep -w foo a.txt",
    "sed 's/o/0/g' a.txt",
    "sed 's/o/0/' a.txt",
    "sed -i 's/foo/FOO/g' a.txt && cat a.txt",
    "sed -n '2p' a.txt; sed '1d' b.txt",
    "echo abc | sed -E 's/(b)/[\\1]/'",
    # awk (mesa's own: see mesa/_bash.py)
    "awk -F, '{print $1+$2}' csv",
    "awk 'NR==2' a.txt",
    "awk '/foo/ {print NR\": \"$0}' a.txt",
    "awk -F, '$1 > 1 {print $2}' csv",
    "awk -F, '{print $NF}' csv",
    "awk '{print length($0)}' a.txt",
    "awk 'BEGIN{x=1} {x+=1} END{print x}' b.txt",
    "awk '{ s += $1 } END { print s, s/NR, NR }' b.txt",
    "awk '{ count[$1]++ } END { for (k in count) n++; print n }' b.txt",
    "awk -F, 'NR>1 { printf \"%-5s|%5.2f|%d\\n\", $1, $2, $3 }' csv",
    "awk '{ $2 = \"X\"; print }' a.txt",
    "awk '{ print NF \":\" $NF }' a.txt",
    "awk 'length > 8' a.txt",
    "awk '{ gsub(/o/, \"0\"); print }' a.txt",
    "awk '{ sub(/[a-z]+/, \"<&>\"); print }' a.txt",
    "awk '{ print toupper(substr($0, 1, 3)), index($0, \"o\") }' a.txt",
    'awk \'BEGIN { n = split("a:b:c", parts, ":"); print n, parts[3] }\'',
    "awk 'BEGIN { x = 10; while (x > 1) { x = x / 2 }; print x }'",
    'awk \'BEGIN { for (i = 1; i <= 3; i++) printf "%d ", i * i; print "" }\'',
    "awk 'function sq(v) { return v * v } BEGIN { print sq(7) }'",
    "awk '!seen[$0]++' b.txt",
    "awk 'NR==1, NR==2' a.txt",
    "awk -v name=world 'BEGIN { print \"hello \" name }'",
    "awk 'END { print NR }' a.txt b.txt",
    'awk \'$1 ~ /^[0-9]+$/ { print "num", $1 } $1 !~ /^[0-9]/ { print "word", $1 }\' csv b.txt',
    "awk 'BEGIN { print 1/3, 2^10, 7%3, -3 }'",
    'awk \'{ print $1 > "out"; print NR >> "out2" }\' a.txt; echo $?; cat out out2; '
    'awk \'BEGIN { print "more" >> "out" }\'; cat out',
    'awk \'BEGIN { printf "%s %c %x %05d %e\\n", "s", 65, 255, 42, 1234.5 }\'',
    'awk \'BEGIN { if (!(3 in a)) print "no"; a[3]; if (3 in a) print "yes" }\'',
    "awk '{ print; next; print \"never\" }' b.txt",
    "awk 'BEGIN { exit 3 } END { print \"end\" }'; echo $?",
    'echo "a b c" | awk \'{ $5 = "e"; print; print NF }\'',
    'echo "x,y" | awk \'BEGIN { FS = "," } { print $2 }\'',
    "awk 'BEGIN { s = \"hello\"; print match(s, /ll/), RSTART, RLENGTH }'",
    "awk '{ n = n $1 } END { print n }' b.txt",
    'awk \'BEGIN { printf("%s-%s\\n", "a", "b") }\'',
    "awk '{print $1}' missing; echo $?",
    'awk \'BEGIN { x["a"]=1; delete x["a"]; print length(x) }\'',
    "printf '1 2\\n3 4\\n' | awk '{ t = $1 + $2; print t, (t > 4 ? \"big\" : \"small\") }'",
    'awk \'BEGIN { print substr("hello", 2), substr("hello", 2, 3), substr("hello", 4, 10) }\'',
    "awk 'BEGIN { print int(3.9), int(-3.9), 010 + 0, \"3x\" + 1 }'",
    "awk -F: '{ print $1 }' /dev/null; echo done",
    "awk 'BEGIN { while (1) { if (++i > 5) break }; print i }'",
    "awk 'BEGIN { do { i++ } while (i < 3); print i }'",
    'awk \'{ printf "%s%s", (NR > 1 ? "," : ""), $1 } END { print "" }\' b.txt',
    "head -n 2 a.txt; head -c 5 a.txt; echo",
    "tail -n 2 a.txt; tail -n 1 b.txt; tail -n +2 b.txt; tail -c 4 a.txt",
    "head -n 1 noeol.txt; tail -n 1 noeol.txt; head -2 b.txt; head -n -1 b.txt",
    "head -n 1 a.txt b.txt; tail -n 1 a.txt noeol.txt",
    "cat b.txt | head -n 2 | tail -n 1",
    "wc -l a.txt; wc a.txt b.txt; wc -lw csv; echo hi there | wc",
    "wc -l < a.txt; wc -w < a.txt; wc -c < a.txt",
    "sort b.txt; sort -n b.txt; sort -rn b.txt; sort -u b.txt",
    "tail -n 2 csv | sort -t, -k2 -rn",
    "sort b.txt | uniq -c",
    "uniq -d b.txt; sort b.txt | uniq",
    "cut -d, -f2 csv; cut -c1-3 a.txt",
    "cut -d, -f1,3 csv",
    "echo 'a b c' | tr ' ' '\\n' | sort -r",
    "tr a-z A-Z < a.txt; tr -d l < a.txt",
    "find . -name '*.py' | sort",
    "find . -type d | sort",
    "find . -type f -name '*.txt' | sort",
    "find sub -type f | sort | xargs wc -l",
    "find . -name '*.py' | xargs grep -l import",
    "seq 1 3 | xargs -I{} echo item {}",
    "echo a b c | xargs -n 1 echo",
    "printf 'b.txt\\n' | xargs cat",
    "mkdir -p d/e && touch d/e/f && find d | sort && rm -r d && ls",
    "mkdir d1; mkdir d1; echo $?",
    "cp a.txt z && mv z y && diff a.txt y && echo same && ls",
    "cp -r sub sub2 && find sub2 | sort",
    "mv nothere x; echo $?",
    "rm nothere; echo $?; rm -f nothere; echo $?",
    "touch new.txt && wc -c new.txt",
    "test -z '' && echo empty; test -n x && echo set; [ 3 -lt 4 ] && echo lt",
    "[ -e a.txt ] && [ ! -d a.txt ] && echo file; [ a = b ]; echo $?",
    "cd sub && ls && cd .. && ls -1 | head -n 1",
    "cd nowhere; echo $?",
    "echo a > p; echo b > q; diff p q; echo $?",
    "diff a.txt b.txt; diff b.txt csv; echo $?",
    "printf '1\\n2\\n3\\n4\\n' > o; printf '1\\nx\\n3\\n5\\n6\\n' > n; diff o n; diff n o",
    "printf 'a\\nb\\nc\\n' > o; printf 'b\\nc\\nd\\n' > n; diff o n",
    "diff -u a.txt b.txt > /dev/null; echo $?",
    "diff a.txt a.txt; echo $?",
    "basename /acme/app/w/sub/c.py; basename /x/c.py .py; dirname /acme/app/w/sub/c.py",
    "echo hello | tee t1 | tr a-z A-Z; cat t1",
    "echo more | tee -a t2 > /dev/null; echo again | tee -a t2; cat t2",
    "true; echo $?; false; echo $?",
    "nosuchcmd arg; echo $?",
]


@pytest.mark.parametrize("script", DIFFERENTIAL)
async def test_same_as_real_bash(fs: MesaFileSystem, tmp_path: Path, script: str) -> None:
    if shutil.which("bash") is None:  # pragma: no cover - Debian always has it
        pytest.skip("no /bin/bash to compare with")
    result = await fs.bash(cwd=W).exec(script)
    out, code = _real_bash(script, tmp_path)
    assert (result.stdout.decode(), result.exit_code) == (out, code), result.stderr


# Scripts with the exact output expected (no oracle: paths are mount paths here).
EXPECTED = [
    ("pwd", f"{W}\n", 0),
    ("cd sub; pwd; cd ..; pwd", f"{W}/sub\n{W}\n", 0),
    ("cd /acme/app && ls", "w\n", 0),
    ("ls /", "acme\n", 0),
    ("ls /acme", "app\n", 0),
    ("cat /etc/passwd; echo $?", "1\n", 0),
    ("ls /tmp; echo $?", "2\n", 0),
    ("echo x > /tmp/x 2>/dev/null; echo $?", "x\n1\n", 0),  # (bash prints no x: docs/bash.md)
    ("nosuchcmd", "", 127),
    ("echo $HOME $USER", "/ mesa\n", 0),
]


@pytest.mark.parametrize(("script", "stdout", "code"), EXPECTED)
async def test_expected_output(fs: MesaFileSystem, script: str, stdout: str, code: int) -> None:
    result = await fs.bash(cwd=W).exec(script)
    assert (result.stdout.decode(), result.exit_code) == (stdout, code), result.stderr


async def test_result_type_and_command_not_found(fs: MesaFileSystem) -> None:
    bash = fs.bash(cwd=W)
    assert isinstance(bash, Bash)
    result = await bash.exec("nosuchcmd --flag")
    assert isinstance(result, ExecResult)
    assert result.exit_code == 127
    assert b"command not found" in result.stderr
    assert isinstance(result.stdout, bytes)


async def test_state_persists_across_exec(fs: MesaFileSystem) -> None:
    bash = fs.bash(cwd=W)
    await bash.exec("cd sub; X=42; export Y=7")
    result = await bash.exec('pwd; echo "$X $Y"')
    assert result.stdout == f"{W}/sub\n42 7\n".encode()
    other = fs.bash(cwd=W)
    assert (await other.exec('pwd; echo "[$X]"')).stdout == f"{W}\n[]\n".encode()


async def test_host_environment_is_not_inherited(
    fs: MesaFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESA_BASH_SECRET", "leak")
    bash = fs.bash(cwd=W, env={"GIVEN": "yes"})
    result = await bash.exec('echo "[$MESA_BASH_SECRET] [$GIVEN]"; env | grep -c SECRET')
    assert result.stdout == b"[] [yes]\n0\n"


async def test_writes_are_mesafs_writes_seen_by_another_mount(
    mesa: Mesa, fs: MesaFileSystem
) -> None:
    async with mesa.fs.mount(repos=["app"]) as other:
        await other.wait_synced()
        events: list[WatchEvent] = []
        seen = asyncio.Event()

        def on_change(event: WatchEvent) -> None:
            events.append(event)
            if event.path == f"{W}/out/log.txt":
                seen.set()

        sub = other.subscribe(on_change)
        result = await fs.bash(cwd=W).exec(
            "mkdir out && grep -rn import . | sort > out/log.txt && echo done >> out/log.txt"
        )
        assert result.exit_code == 0, result.stderr
        await asyncio.wait_for(seen.wait(), 5)
        await other.wait_synced()
        assert await other.read(f"{W}/out/log.txt") == (
            b"./sub/c.py:2:import os\n./sub/deep/d.md:2:import nothing\ndone\n"
        )
        assert f"{W}/out" in {e.path for e in events}
        await sub.unsubscribe()
        # and history records the bash writes as ordinary entries
        history = await fs.changes.history(f"{W}/out/log.txt")
        mine = [e.op for e in history if e.paths == (f"{W}/out/log.txt",)]
        # ">" and ">>" are one whole-file write each (">>" reads then writes: docs/bash.md)
        assert mine == ["write", "write"], history
        assert [e.op for e in history if e.paths == (f"{W}/out",)] == ["mkdir"]


async def test_bash_sees_writes_of_another_mount(mesa: Mesa, fs: MesaFileSystem) -> None:
    bash = fs.bash(cwd=W)
    async with mesa.fs.mount(repos=["app"]) as other:
        await other.write(f"{W}/from-other.txt", b"other\n")
    await fs.wait_synced()
    assert (await bash.exec("cat from-other.txt")).stdout == b"other\n"


async def test_cat_of_binary_file_fails_and_points_to_read(fs: MesaFileSystem) -> None:
    await fs.write(f"{W}/blob.bin", b"\x00\xff\xfe\x80binary")
    result = await fs.bash(cwd=W).exec("cat blob.bin")
    assert result.exit_code == 1
    assert b"fs.read" in result.stderr
    assert result.stdout == b""


async def test_utf8_round_trips(fs: MesaFileSystem) -> None:
    result = await fs.bash(cwd=W).exec("echo 'héllo ✓' > u.txt; cat u.txt; wc -c < u.txt")
    assert result.stdout == "héllo ✓\n11\n".encode()
    assert await fs.read(f"{W}/u.txt") == "héllo ✓\n".encode()


async def test_timeout_stops_a_runaway_loop_with_124(fs: MesaFileSystem) -> None:
    bash = fs.bash(cwd=W, timeout_ms=300)
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await bash.exec("while true; do :; done")
    assert result.exit_code == 124
    assert b"timeout" in result.stderr
    assert loop.time() - start < 10
    # the session is still usable, with a fresh deadline
    assert (await bash.exec("echo ok")).stdout == b"ok\n"


async def test_timeout_stops_a_sleep(fs: MesaFileSystem) -> None:
    result = await fs.bash(cwd=W, timeout_ms=200).exec("sleep 20; echo never")
    assert result.exit_code == 124
    assert result.stdout == b""


async def test_long_loop_within_the_timeout_is_not_limited(fs: MesaFileSystem) -> None:
    result = await fs.bash(cwd=W).exec("n=0; for i in $(seq 1 20000); do n=$((n+1)); done; echo $n")
    assert result.stdout == b"20000\n", result.stderr


async def test_host_event_loop_is_not_patched(fs: MesaFileSystem) -> None:
    loop = asyncio.get_running_loop()
    before = (type(loop).run_forever, type(loop)._run_once, asyncio.Task, asyncio.run)  # type: ignore[attr-defined]
    result = await fs.bash(cwd=W).exec("a=(x y z); echo ${a[$(echo 1)]}")
    after = (type(loop).run_forever, type(loop)._run_once, asyncio.Task, asyncio.run)  # type: ignore[attr-defined]
    assert after == before
    assert result.exit_code != 0
    assert b"not supported" in result.stderr
    # plain subscripts still work
    assert (await fs.bash().exec("a=(x y z); i=2; echo ${a[1]} ${a[$i]}")).stdout == b"y z\n"


@pytest.mark.parametrize(
    ("script", "stdout"),
    [
        # POSIX substr (gawk's; mawk differs at positions below 1)
        ('awk \'BEGIN { print substr("hello", 0, 2) "|" substr("hello", -1, 3) }\'', "h|h\n"),
        ('awk \'BEGIN { printf "%s", ENVIRON["HOME"] }\'', "/"),
        ("awk '{ print FILENAME \":\" FNR }' b.txt csv | tail -n 1", "csv:3\n"),
    ],
)
async def test_awk_expected(fs: MesaFileSystem, script: str, stdout: str) -> None:
    result = await fs.bash(cwd=W).exec(script)
    assert (result.stdout.decode(), result.exit_code) == (stdout, 0), result.stderr


@pytest.mark.parametrize(
    "script",
    [
        "awk 'BEGIN { system(\"ls\") }'",
        "awk '{ print | \"sort\" }' a.txt",
        "awk '{ getline x }' a.txt",
        "awk 'BEGIN { print 1/0 }'",
        "awk '{ print $1 ' a.txt",
        "awk 'BEGIN { x = 1; x[1] = 2 }'",
    ],
)
async def test_awk_unsupported_or_wrong_is_exit_2(fs: MesaFileSystem, script: str) -> None:
    result = await fs.bash(cwd=W).exec(script)
    assert result.exit_code == 2
    assert result.stderr.startswith(b"awk: ")


async def test_timeout_stops_an_awk_loop(fs: MesaFileSystem) -> None:
    result = await fs.bash(cwd=W, timeout_ms=300).exec("awk 'BEGIN { while (1) x++ }'; echo after")
    assert result.exit_code == 124


async def test_a_file_error_the_interpreter_lets_through_is_exit_1(fs: MesaFileSystem) -> None:
    # process substitution has no file behind it here: just-bash raises, mesa answers
    result = await fs.bash(cwd=W).exec("diff <(echo a) <(echo b)")
    assert result.exit_code == 1
    assert b"internal error" not in result.stderr
    assert b"No such file or directory" in result.stderr


async def test_failures_are_exit_codes_not_exceptions(fs: MesaFileSystem) -> None:
    bash = fs.bash(cwd=W)
    for script in ("rm -r /acme/app", "mkdir /acme/new", "cd /nowhere", "if then fi", "(("):
        result = await bash.exec(script)
        assert result.exit_code != 0, script


def test_options_are_checked(fs: MesaFileSystem) -> None:
    with pytest.raises(ValueError, match="timeout_ms"):
        fs.bash(timeout_ms=0)
    with pytest.raises(ValueError, match="cwd"):
        fs.bash(cwd="relative")
    with pytest.raises(TypeError):
        fs.bash(env={"A": 1})  # type: ignore[dict-item]


async def test_no_host_process_is_spawned(
    monkeypatch: pytest.MonkeyPatch, fs: MesaFileSystem
) -> None:
    """Every way to start a process raises here; the scripts still run."""
    started: list[str] = []

    def refuse(name: str) -> object:
        def call(*args: object, **kwargs: object) -> None:
            started.append(name)
            raise AssertionError(f"fs.bash called {name}")

        return call

    monkeypatch.setattr(subprocess, "Popen", refuse("Popen"))
    for name in ("system", "execv", "execve", "posix_spawn", "fork"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(name))
    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse("exec"))
    monkeypatch.setattr(asyncio, "create_subprocess_shell", refuse("shell"))
    result = await fs.bash(cwd=W).exec(
        "ls | sort | head -n 2; find . -name '*.py' | xargs grep -c import; bash -c 'echo in'"
    )
    assert started == []
    assert result.stdout == b"a.txt\nb.txt\n1\nin\n", result.stderr


class _SlowWrites:
    """A mount whose writes take 0.5 s: a script's deadline falls while one is in flight."""

    def __init__(self, fs: MesaFileSystem) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> object:
        return getattr(self._fs, name)

    async def write(self, path: str, content: bytes) -> None:
        await asyncio.sleep(0.5)
        await self._fs.write(path, content)


async def test_a_write_in_flight_at_the_deadline_lands_whole(fs: MesaFileSystem) -> None:
    bash = Bash(_SlowWrites(fs), cwd=W, timeout_ms=100)  # type: ignore[arg-type]
    result = await bash.exec("echo landed > late.txt; echo never")
    assert result.exit_code == 124
    assert result.stdout == b""
    assert not await fs.exists(f"{W}/late.txt")  # returned before the write finished
    for _ in range(50):
        if await fs.exists(f"{W}/late.txt"):
            break
        await asyncio.sleep(0.05)
    assert await fs.read(f"{W}/late.txt") == b"landed\n"

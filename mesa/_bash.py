"""`fs.bash()`: a bash interpreter whose filesystem is the mount itself.

The interpreter is just-bash (PyPI ``just-bash``, pure Python): its parser, its shell
(pipes, redirections, here-docs, ``&&``/``||``, subshells, functions, expansions, globs,
control flow) and its commands run in this process, on the caller's event loop. No host
shell or process is spawned and the host environment is not inherited. `_MountFs`
implements just-bash's async ``IFileSystem`` over `MesaFileSystem`, so every file the
script writes is an ordinary mesafs write: other mounts see it, subscribers get events,
history records it. Paths are mount paths (``/<org>/<repo>/...``); anything else is
missing, like a missing file.

What this module adds to just-bash (see docs/bash.md):

- ``timeout_ms``: a deadline checked at every command and loop iteration (just-bash
  declares a ``timeout_ms`` limit but never enforces it) and around every await; a
  script past it stops with exit code 124 and ``timeout`` on stderr, never an exception.
- no global patching: just-bash calls ``nest_asyncio.apply()`` (which replaces
  ``asyncio.Task``, ``asyncio.run`` and the running loop's class methods for the whole
  process) and runs the script on a second thread and event loop when an array
  subscript holds a command substitution (``${a[$(cmd)]}``). `_guard_subscripts` makes
  that one construct a bash error (exit 1) instead; nothing else in just-bash touches
  the event loop from ``Bash.exec``.
- ``cat``, ``xargs`` and ``awk``'s pattern-only rules, where just-bash's differ from
  GNU's on what agents use (see `_Cat`, `_Xargs`): ``cat`` of a non-UTF-8 file fails and
  says to use ``fs.read``.
- bytes results, and no exception ever: an error inside the interpreter is exit code 2.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import random
import re
import shlex
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from just_bash import Bash as _JustBash
from just_bash.commands.diff.diff import DiffCommand
from just_bash.commands.grep.grep import GrepCommand
from just_bash.commands.registry import create_command_registry
from just_bash.interpreter import expansion as _expansion
from just_bash.interpreter.errors import BadSubstitutionError, ExecutionLimitError
from just_bash.types import CommandContext, ExecutionLimits
from just_bash.types import ExecResult as _JbResult
from just_bash.types import FsStat as _JbStat

from mesa._types import FsStat
from mesa.errors import InvalidOptionsError

#: Exit code of a script stopped by ``timeout_ms`` (as GNU ``timeout`` exits).
TIMEOUT_EXIT = 124
#: The environment a script starts with (the host's is never read).
BASE_ENV = {"HOME": "/", "PATH": "/usr/bin:/bin", "USER": "mesa", "SHELL": "/bin/bash"}
_HUGE = 10**12


@dataclass(frozen=True)
class ExecResult:
    """What one `Bash.exec` produced: its output bytes and the exit code of its last command."""

    stdout: bytes
    stderr: bytes
    exit_code: int


class Bash:
    """A bash session over a mount: cwd and variables persist across `exec` calls."""

    def __init__(
        self,
        fs: MountFileSystem,
        *,
        env: dict[str, str] | None = None,
        cwd: str = "/",
        timeout_ms: int = 30000,
    ) -> None:
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise InvalidOptionsError(f"timeout_ms must be a positive int, not {timeout_ms!r}")
        if not isinstance(cwd, str):
            raise TypeError(f"cwd must be a str, not {type(cwd).__name__}")
        if not cwd.startswith("/"):
            raise InvalidOptionsError(f"cwd must be an absolute mount path, not {cwd!r}")
        if env is not None and not isinstance(env, Mapping):
            raise TypeError(f"env must map str to str, not {type(env).__name__}")
        start_env = dict(BASE_ENV)
        for key, value in (env or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("env must map str to str")
            start_env[key] = value
        self.timeout_ms = timeout_ms
        self._limits = _DeadlineLimits()
        commands = create_command_registry()
        commands.update(
            {
                "cat": _Cat(),
                "xargs": _Xargs(),
                "grep": _Grep(),
                "wc": _Wc(),
                "head": _HeadTail("head"),
                "tail": _HeadTail("tail"),
                "diff": _Diff(),
                "awk": _Awk(),
            }
        )
        self._bash = _JustBash(
            fs=_MountFs(fs),
            cwd=cwd,
            env=start_env,
            limits=self._limits,
            commands=commands,
            unescape_html=False,
        )
        self._lock = asyncio.Lock()

    @property
    def cwd(self) -> str:
        """The session's working directory."""
        return str(self._bash.cwd)

    async def exec(self, commands: str) -> ExecResult:
        """Run ``commands``; a failure is a non-zero exit code, never an exception.

        Past ``timeout_ms`` the script stops with exit code 124 and ``timeout`` on
        stderr. Calls on one session run one at a time.
        """
        if not isinstance(commands, str):
            raise TypeError("commands must be a str")
        async with self._lock:
            self._limits.start(self.timeout_ms)
            try:
                async with asyncio.timeout(self.timeout_ms / 1000):
                    result = await self._bash.exec(commands)
            except (TimeoutError, _TimedOutError):
                return _timed_out(self.timeout_ms)
            except ExecutionLimitError as exc:
                return ExecResult(b"", _bytes(f"bash: {exc}\n"), 1)
            except OSError as exc:  # a file error just-bash let through (e.g. <(...))
                message = exc.strerror or str(exc)
                where = f"{exc.filename}: " if exc.filename else ""
                return ExecResult(b"", _bytes(f"bash: {where}{message}\n"), 1)
            except Exception as exc:  # an interpreter bug: still a result, not a raise
                return ExecResult(b"", _bytes(f"bash: internal error: {exc!r}\n"), 2)
            finally:
                self._limits.stop()
            return ExecResult(_bytes(result.stdout), _bytes(result.stderr), result.exit_code)


def _timed_out(timeout_ms: int) -> ExecResult:
    return ExecResult(b"", _bytes(f"bash: timeout: stopped after {timeout_ms} ms\n"), TIMEOUT_EXIT)


def _bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A lone surrogate that is not an escaped byte (``printf '\ud800'``, or one in
        # the script): its code point's three bytes, as bash writes them; exec never
        # raises for what a script prints.
        return b"".join(_char_bytes(c) for c in text)


def _char_bytes(char: str) -> bytes:
    try:
        return char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return char.encode("utf-8", "surrogatepass")


class _TimedOutError(ExecutionLimitError):
    def __init__(self) -> None:
        super().__init__("timeout", "time")


class _DeadlineLimits(ExecutionLimits):
    """just-bash's limits, with the deadline checked wherever it reads a count limit.

    The interpreter reads ``max_command_count`` before every command and the loop
    limits on every iteration (awk and sed too): reading one past the deadline raises,
    which stops a loop that never awaits anything.
    """

    def __init__(self) -> None:
        self._deadline = math.inf
        super().__init__(
            max_command_count=_HUGE,
            max_loop_iterations=_HUGE,
            max_awk_iterations=_HUGE,
            max_sed_iterations=_HUGE,
        )

    def start(self, timeout_ms: int) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1000

    def stop(self) -> None:
        self._deadline = math.inf

    def _checked(name: str) -> property:  # type: ignore[misc]  # noqa: N805 (a class-body helper)
        slot = "_" + name

        def get(self: _DeadlineLimits) -> int:
            if time.monotonic() > self._deadline:
                raise _TimedOutError
            value: int = getattr(self, slot)
            return value

        def set_(self: _DeadlineLimits, value: int) -> None:
            setattr(self, slot, value)

        return property(get, set_)

    max_command_count = _checked("max_command_count")
    max_loop_iterations = _checked("max_loop_iterations")
    max_awk_iterations = _checked("max_awk_iterations")
    max_sed_iterations = _checked("max_sed_iterations")
    del _checked


# -- no second event loop -------------------------------------------------------------------

_original_subscript: Callable[[Any, str], str] = _expansion._expand_subscript_vars


def _guard_subscripts(ctx: Any, subscript: str) -> str:
    """Refuse a command substitution inside an array subscript (see the module docstring)."""
    if "$(" in subscript or "`" in subscript:
        raise BadSubstitutionError(
            f"{subscript}: command substitution in an array subscript is not supported",
            stderr=f"bash: {subscript}: command substitution in an array subscript is not "
            "supported\n",
        )
    return _original_subscript(ctx, subscript)


_expansion._expand_subscript_vars = _guard_subscripts


# -- the filesystem -----------------------------------------------------------------------


class MountFileSystem(Protocol):
    """What a session needs of `mesa.MesaFileSystem` (named here: ``mesa._fs`` imports us)."""

    async def read(self, path: str) -> bytes: ...
    async def write(self, path: str, content: bytes) -> None: ...
    async def append(self, path: str, content: bytes) -> None: ...
    async def exists(self, path: str) -> bool: ...
    async def stat(self, path: str) -> FsStat: ...
    async def lstat(self, path: str) -> FsStat: ...
    async def readdir(self, path: str) -> list[str]: ...
    async def mkdir(self, path: str, recursive: bool | None = None) -> None: ...  # noqa: FBT001
    async def rm(
        self,
        path: str,
        recursive: bool | None = None,  # noqa: FBT001
        force: bool | None = None,  # noqa: FBT001
    ) -> None: ...
    async def cp(self, src: str, dest: str, recursive: bool | None = None) -> None: ...  # noqa: FBT001
    async def mv(self, src: str, dest: str) -> None: ...
    async def chmod(self, path: str, mode: int) -> None: ...
    async def symlink(self, target: str, path: str) -> None: ...
    async def readlink(self, path: str) -> str: ...
    async def utimes(self, path: str, atime_ms: float, mtime_ms: float) -> None: ...
    async def realpath(self, path: str) -> str: ...
    def resolve_path(self, base: str, path: str) -> str: ...


class _MountFs:
    """just-bash's ``IFileSystem`` over a `MesaFileSystem`: OSErrors pass through as they are."""

    def __init__(self, fs: MountFileSystem) -> None:
        self._fs = fs

    async def read_file(self, path: str, encoding: str = "utf-8") -> str:
        return (await self._fs.read(path)).decode(encoding, "surrogateescape")

    async def read_file_bytes(self, path: str) -> bytes:
        return await self._fs.read(path)

    async def write_file(self, path: str, content: str | bytes, encoding: str = "utf-8") -> None:
        data = content.encode(encoding, "surrogateescape") if isinstance(content, str) else content
        await _whole(self._fs.write(path, data))

    async def append_file(self, path: str, content: str | bytes) -> None:
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        await _whole(self._fs.append(path, data))

    async def exists(self, path: str) -> bool:
        try:
            return await self._fs.exists(path)
        except OSError:
            return False

    async def is_file(self, path: str) -> bool:
        try:
            return (await self._fs.stat(path)).is_file
        except OSError:
            return False

    async def is_directory(self, path: str) -> bool:
        try:
            return (await self._fs.stat(path)).is_directory
        except OSError:
            return False

    async def mkdir(self, path: str, recursive: bool = False) -> None:  # noqa: FBT001, FBT002
        await _whole(self._fs.mkdir(path, recursive=recursive))

    async def readdir(self, path: str) -> list[str]:
        return await self._fs.readdir(path)

    async def rm(self, path: str, recursive: bool = False, force: bool = False) -> None:  # noqa: FBT001, FBT002
        await _whole(self._fs.rm(path, recursive=recursive, force=force))

    async def cp(self, src: str, dest: str, recursive: bool = False) -> None:  # noqa: FBT001, FBT002
        await _whole(self._fs.cp(src, dest, recursive=recursive))

    async def mv(self, src: str, dest: str) -> None:
        await _whole(self._fs.mv(src, dest))

    async def stat(self, path: str) -> _JbStat:
        return _jb_stat(await self._fs.stat(path))

    async def lstat(self, path: str) -> _JbStat:
        return _jb_stat(await self._fs.lstat(path))

    async def chmod(self, path: str, mode: int) -> None:
        await _whole(self._fs.chmod(path, mode))

    async def symlink(self, target: str, link_path: str) -> None:
        await _whole(self._fs.symlink(target, link_path))

    async def readlink(self, path: str) -> str:
        return await self._fs.readlink(path)

    async def utimes(self, path: str, atime: float, mtime: float) -> None:
        await _whole(self._fs.utimes(path, atime * 1000, mtime * 1000))

    async def realpath(self, path: str) -> str:
        return await self._fs.realpath(path)

    def resolve_path(self, base: str, path: str) -> str:
        return self._fs.resolve_path(base, path)


async def _whole(mutation: Coroutine[Any, Any, None]) -> None:
    """Run a mutation to its end even if the script is stopped meanwhile (the timeout).

    A stopped script returns at once; a write it had started still lands (or fails)
    as a whole, as when a caller's own task is cancelled after ``fs.write`` was sent.
    """
    task = asyncio.ensure_future(mutation)
    task.add_done_callback(_retrieve)
    await asyncio.shield(task)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # seen: an abandoned write that failed is not "never retrieved"


def _jb_stat(st: FsStat) -> _JbStat:
    return _JbStat(
        is_file=st.is_file,
        is_directory=st.is_directory,
        is_symbolic_link=st.is_symbolic_link,
        mode=st.mode,
        size=st.size,
        mtime=st.mtime_ms / 1000,
    )


# -- commands where just-bash's differ from GNU's ----------------------------------------------


class _Cat:
    """``cat [-n] [FILE|-]...``: bytes as they are; a non-UTF-8 file fails (use ``fs.read``)."""

    name = "cat"

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        number = False
        files: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                files.extend(args[i + 1 :])
                break
            if arg == "-n":
                number = True
            elif arg.startswith("-") and arg != "-":
                return _JbResult("", f"cat: invalid option -- '{arg.lstrip('-')}'\n", 1)
            else:
                files.append(arg)
        out: list[str] = []
        err: list[str] = []
        for name in files or ["-"]:
            if name in ("-", "/dev/stdin"):
                out.append(ctx.stdin)
                continue
            path = ctx.fs.resolve_path(ctx.cwd, name)
            try:
                data = await ctx.fs.read_file_bytes(path)
            except OSError as exc:
                err.append(f"cat: {name}: {_strerror(exc)}\n")
                continue
            try:
                out.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                err.append(
                    f"cat: {name}: binary file (not UTF-8 text): read it with fs.read('{path}')\n"
                )
        text = "".join(out)
        if number:
            lines = text.splitlines(keepends=True)
            text = "".join(f"{n:6}\t{line}" for n, line in enumerate(lines, 1))
        return _JbResult(text, "".join(err), 1 if err else 0)


class _Xargs:
    """``xargs [-I REPL] [-n N] [-0] [COMMAND [ARG]...]`` (GNU's splitting of the input)."""

    name = "xargs"

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        replace: str | None = None
        per: int | None = None
        null = False
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "-":
            arg = args[i]
            if arg in ("-I", "-n") and i + 1 < len(args):
                if arg == "-I":
                    replace = args[i + 1]
                else:
                    per = _positive(args[i + 1])
                    if per is None:
                        return _JbResult("", f"xargs: invalid number: '{args[i + 1]}'\n", 1)
                i += 2
                continue
            if arg.startswith("-I") and len(arg) > 2:
                replace = arg[2:]
            elif arg.startswith("-n") and len(arg) > 2 and _positive(arg[2:]) is not None:
                per = _positive(arg[2:])
            elif arg in ("-0", "--null"):
                null = True
            elif arg == "-r" or arg == "--no-run-if-empty":
                pass
            elif arg == "--":
                i += 1
                break
            else:
                return _JbResult("", f"xargs: invalid option -- '{arg.lstrip('-')}'\n", 1)
            i += 1
        command = args[i:] or ["echo"]
        if ctx.exec is None:
            return _JbResult("", "xargs: cannot run commands here\n", 1)
        if replace is not None:
            items = [line for line in ctx.stdin.split("\n") if line.strip()]
            batches = [[a.replace(replace, item) for a in command] for item in items]
        else:
            if null:
                items = [x for x in ctx.stdin.split("\0") if x]
            else:
                try:
                    items = shlex.split(ctx.stdin)
                except ValueError as exc:
                    return _JbResult("", f"xargs: {exc}\n", 1)
            if not items:
                return _JbResult("", "", 0)
            size = per or len(items)
            batches = [command + items[k : k + size] for k in range(0, len(items), size)]
        out: list[str] = []
        err: list[str] = []
        code = 0
        for argv in batches:
            result = await ctx.exec(" ".join(shlex.quote(a) for a in argv), {"cwd": ctx.cwd})
            out.append(result.stdout)
            err.append(result.stderr)
            if result.exit_code == 127:
                return _JbResult("".join(out), "".join(err), 127)
            if result.exit_code != 0:
                code = 123
        return _JbResult("".join(out), "".join(err), code)


class _Grep(GrepCommand):
    """just-bash's grep, naming files found by ``-r`` as GNU does: under the operand given.

    (just-bash prints ``/acme/app/w/sub/c.py`` for ``grep -r x .``; GNU prints ``./sub/c.py``.)
    """

    _operands: dict[str, str]

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        self._operands = {
            ctx.fs.resolve_path(ctx.cwd, a): a for a in args if a and not a.startswith("-")
        }
        flags = [a for a in args if a.startswith("-") and not a.startswith("--")]
        recursive = "--recursive" in args or any(set(a[1:]) & {"r", "R"} for a in flags)
        if recursive and not any("h" in a[1:] for a in flags) and "--no-filename" not in args:
            # GNU names the file of each match found under a directory, even if only one
            # file is left after --include (just-bash decides by the count).
            for path in self._operands:
                if await ctx.fs.is_directory(path):
                    args = ["-H", *args]
                    break
        result: _JbResult = await super().execute(args, ctx)
        return result

    async def _get_files_recursive(self, ctx: CommandContext, path: str) -> list[str]:
        found: list[str] = await super()._get_files_recursive(ctx, path)
        given = self._operands.get(path)
        if given is None or given.startswith("/"):
            return found
        base = given.rstrip("/") or "/"
        return [base + f[len(path) :] for f in found if f.startswith(path + "/")]


class _Wc:
    """``wc [-l] [-w] [-c|-m] [FILE|-]...`` with GNU's column widths."""

    name = "wc"

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        flags = ""
        files: list[str] = []
        for arg in args:
            if arg.startswith("-") and arg != "-":
                if set(arg[1:]) - set("lwcm"):
                    return _JbResult("", f"wc: invalid option -- '{arg[1:]}'\n", 1)
                flags += arg[1:]
            else:
                files.append(arg)
        show = [c for c in "lwc" if c in flags.replace("m", "c")] or ["l", "w", "c"]
        rows: list[tuple[list[int], str | None]] = []
        err: list[str] = []
        regular_total = 0
        from_stdin = False
        for name in files or ["-"]:
            if name == "-":
                data = ctx.stdin.encode("utf-8", "surrogateescape")
                from_stdin = True
            else:
                try:
                    data = await ctx.fs.read_file_bytes(ctx.fs.resolve_path(ctx.cwd, name))
                except OSError as exc:
                    err.append(f"wc: {name}: {_strerror(exc)}\n")
                    continue
                regular_total += len(data)
            count = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
            if "m" in flags:
                count["c"] = len(data.decode("utf-8", "replace"))
            rows.append(([count[c] for c in show], name if files else None))
        if len(rows) > 1:
            rows.append(([sum(r[0][i] for r in rows) for i in range(len(show))], "total"))
        if len(show) == 1 and len(files or ["-"]) == 1:
            width = 1
        else:
            width = max(len(str(regular_total)), 7 if from_stdin else 1)
        out = "".join(
            " ".join(f"{n:{width}}" for n in nums) + (f" {name}" if name else "") + "\n"
            for nums, name in rows
        )
        return _JbResult(out, "".join(err), 1 if err else 0)


class _HeadTail:
    """``head``/``tail`` ``[-n N|-N|-c N] [FILE|-]...`` (``tail -n +N``, ``head -n -N``), GNU's."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        unit, count, files = "n", "10", []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-n", "-c") and i + 1 < len(args):
                unit, count = arg[1], args[i + 1]
                i += 1
            elif arg[:2] in ("-n", "-c") and len(arg) > 2:
                unit, count = arg[1], arg[2:]
            elif arg[:1] == "-" and arg[1:].isdigit():
                count = arg[1:]
            elif arg == "-q":
                pass
            elif arg.startswith("-") and arg != "-":
                return _JbResult("", f"{self.name}: invalid option -- '{arg.lstrip('-')}'\n", 1)
            else:
                files.append(arg)
            i += 1
        sign = count[:1] if count[:1] in "+-" else ""
        if not count.lstrip("+-").isdigit():
            return _JbResult("", f"{self.name}: invalid number of lines: '{count}'\n", 1)
        n = int(count.lstrip("+-"))
        out: list[str] = []
        err: list[str] = []
        names = files or ["-"]
        for k, name in enumerate(names):
            if name == "-":
                text = ctx.stdin
            else:
                try:
                    data = await ctx.fs.read_file_bytes(ctx.fs.resolve_path(ctx.cwd, name))
                except OSError as exc:
                    err.append(f"{self.name}: cannot open '{name}' for reading: {_strerror(exc)}\n")
                    continue
                text = data.decode("utf-8", "surrogateescape")
            if len(names) > 1:
                out.append(("\n" if k else "") + f"==> {name} <==\n")
            parts: list[str] = text.splitlines(keepends=True) if unit == "n" else list(text)
            out.append("".join(self._pick(parts, n, sign)))
        return _JbResult("".join(out), "".join(err), 1 if err else 0)

    def _pick(self, parts: list[str], n: int, sign: str) -> list[str]:
        if self.name == "head":
            return parts[: len(parts) - n] if sign == "-" else parts[:n]
        if sign == "+":
            return parts[max(n - 1, 0) :]
        return parts[len(parts) - n :] if n else []


class _Diff:
    """``diff A B`` in GNU's normal format; with options, just-bash's diff (unified)."""

    name = "diff"

    def __init__(self) -> None:
        self._unified = DiffCommand()

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        if len(args) != 2 or any(a.startswith("-") and a != "-" for a in args):
            result: _JbResult = await self._unified.execute(args, ctx)
            return result
        texts: list[list[str]] = []
        for name in args:
            if name == "-":
                texts.append(ctx.stdin.splitlines(keepends=True))
                continue
            try:
                data = await ctx.fs.read_file_bytes(ctx.fs.resolve_path(ctx.cwd, name))
            except OSError as exc:
                return _JbResult("", f"diff: {name}: {_strerror(exc)}\n", 2)
            texts.append(data.decode("utf-8", "surrogateescape").splitlines(keepends=True))
        old, new = texts
        out: list[str] = []
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "delete":
                out.append(f"{_span(i1, i2)}d{j1}\n")
            elif tag == "insert":
                out.append(f"{i1}a{_span(j1, j2)}\n")
            else:
                out.append(f"{_span(i1, i2)}c{_span(j1, j2)}\n")
            out.extend(_side("< ", old[i1:i2]))
            if tag == "replace":
                out.append("---\n")
            out.extend(_side("> ", new[j1:j2]))
        return _JbResult("".join(out), "", 1 if out else 0)


def _span(lo: int, hi: int) -> str:
    return str(lo + 1) if hi - lo == 1 else f"{lo + 1},{hi}"


def _side(mark: str, lines: list[str]) -> list[str]:
    shown: list[str] = []
    for line in lines:
        shown.append(mark + line)
        if not line.endswith("\n"):
            shown.append("\n\\ No newline at end of file\n")
    return shown


def _positive(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _strerror(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "No such file or directory"
    if isinstance(exc, IsADirectoryError):
        return "Is a directory"
    if isinstance(exc, PermissionError):
        return "Permission denied"
    return exc.strerror or str(exc)


# -- awk ------------------------------------------------------------------------------------
#
# just-bash's awk matches patterns by splitting their text at the first operator and
# concatenates by string surgery (`awk 'NR==2'` prints nothing, `$1 > 1` never sees $1,
# `print NR ": " $0` prints `1":...`), and no kept library interprets POSIX awk in Python.
# So this is one: a lexer, a recursive-descent parser to tuples, and an evaluator with
# awk's values (numbers, strings, and "strnums" from input that compare as numbers when
# they look like one). Not supported: getline, ``print | cmd``, system().


class _AwkError(Exception):
    """A syntax or run-time error: ``awk: ...`` on stderr, exit code 2."""


class _StrNum(str):
    """A string from input (a field, $0, -v, split): compares as a number if it looks like one."""

    __slots__ = ()


class _Uninit(_StrNum):
    """The value of a variable never set: "" as a string, 0 as a number."""

    __slots__ = ()


_UNINIT = _Uninit("")
_NUMBER_PREFIX = re.compile(r"\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)")
_LOOKS_NUMERIC = re.compile(r"\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)\s*\Z")
_POSIX_CLASSES = {
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:alnum:]": "a-zA-Z0-9",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
    "[:space:]": " \\t\\n\\r\\f\\v",
    "[:blank:]": " \\t",
    "[:xdigit:]": "0-9A-Fa-f",
    "[:punct:]": "!-/:-@\\[-`{-~",
    "[:cntrl:]": "\\x00-\\x1f\\x7f",
    "[:print:]": " -~",
    "[:graph:]": "!-~",
}
_AWK_KEYWORDS = {
    "BEGIN", "END", "function", "func", "if", "else", "while", "for", "do", "break",
    "continue", "next", "nextfile", "exit", "return", "delete", "in", "getline", "print",
    "printf",
}  # fmt: skip
_AWK_BUILTINS = {
    "length", "substr", "index", "split", "sub", "gsub", "match", "sprintf", "tolower",
    "toupper", "int", "sqrt", "exp", "log", "sin", "cos", "atan2", "rand", "srand", "system",
    "close", "fflush",
}  # fmt: skip
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/=", "%=", "^="}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "/": "/", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}  # fmt: skip


def _awk_unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt in "01234567":
                j = i + 1
                while j < len(text) and j < i + 4 and text[j] in "01234567":
                    j += 1
                out.append(chr(int(text[i + 1 : j], 8)))
                i = j
                continue
            out.append("\\" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _awk_regex(source: str) -> re.Pattern[str]:
    for name, chars in _POSIX_CLASSES.items():
        source = source.replace(name, chars)
    try:
        return re.compile(source)
    except re.error as exc:
        raise _AwkError(f"invalid regular expression /{source}/: {exc}") from None


def _awk_lex(src: str) -> list[tuple[str, str]]:
    """Tokens as (kind, text); kinds: num str ere name func builtin kw nl op eof."""
    toks: list[tuple[str, str]] = []
    i = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c in " \t\r":
            i += 1
        elif c == "\\" and i + 1 < n and src[i + 1] == "\n":
            i += 2
        elif c == "#":
            while i < n and src[i] != "\n":
                i += 1
        elif c == "\n":
            toks.append(("nl", "\n"))
            i += 1
        elif c == '"':
            j = i + 1
            buf: list[str] = []
            while j < n and src[j] != '"':
                if src[j] == "\\" and j + 1 < n:
                    buf.append(src[j : j + 2])
                    j += 2
                    continue
                buf.append(src[j])
                j += 1
            if j >= n:
                raise _AwkError("unterminated string")
            toks.append(("str", _awk_unescape("".join(buf))))
            i = j + 1
        elif c == "/" and _awk_regex_allowed(toks):
            j = i + 1
            buf = []
            in_bracket = False
            while j < n and (src[j] != "/" or in_bracket):
                if src[j] == "\n":
                    raise _AwkError("newline in regex")
                if src[j] == "\\" and j + 1 < n:
                    buf.append("/" if src[j + 1] == "/" else src[j : j + 2])
                    j += 2
                    continue
                if src[j] == "[" and not in_bracket:
                    in_bracket = True
                    buf.append("[")
                    j += 1
                    if j < n and src[j] == "^":
                        buf.append("^")
                        j += 1
                    if j < n and src[j] == "]":
                        buf.append("\\]")
                        j += 1
                    continue
                if src[j] == "]" and in_bracket:
                    in_bracket = False
                buf.append(src[j])
                j += 1
            if j >= n:
                raise _AwkError("unterminated regex")
            toks.append(("ere", "".join(buf)))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            m = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?").match(src, i)
            assert m is not None
            toks.append(("num", m.group()))
            i = m.end()
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (src[j].isalnum() or src[j] == "_"):
                j += 1
            word = src[i:j]
            if word in _AWK_KEYWORDS:
                toks.append(("kw", word))
            elif word in _AWK_BUILTINS:
                toks.append(("builtin", word))
            elif j < n and src[j] == "(":
                toks.append(("func", word))
            else:
                toks.append(("name", word))
            i = j
        else:
            for op in ("+=", "-=", "*=", "/=", "%=", "^=", "==", "<=", ">=", "!=", "++", "--",
                       "&&", "||", ">>", "!~", "**="):  # fmt: skip
                if src.startswith(op, i):
                    toks.append(("op", "^=" if op == "**=" else op))
                    i += len(op)
                    break
            else:
                if src.startswith("**", i):
                    toks.append(("op", "^"))
                    i += 2
                elif c in "{}()[];,+-*/%^!><|?:~$=":
                    toks.append(("op", c))
                    i += 1
                else:
                    raise _AwkError(f"syntax error at '{c}'")
    toks.append(("eof", ""))
    return toks


def _awk_regex_allowed(toks: list[tuple[str, str]]) -> bool:
    """A "/" starts a regex unless it follows something that ends an operand."""
    if not toks:
        return True
    kind, text = toks[-1]
    if kind in ("num", "str", "ere", "name", "builtin"):
        return False
    return not (kind == "op" and text in (")", "]", "$", "++", "--"))


class _AwkParser:
    """Recursive descent over `_awk_lex` tokens to nested tuples (see `_AwkRun`)."""

    def __init__(self, src: str) -> None:
        self.toks = _awk_lex(src)
        self.pos = 0
        self.no_gt = 0  # inside an unparenthesized print list, ">" is a redirection
        self.no_in = 0  # inside for(...) init, "in" belongs to the loop

    # token helpers
    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[min(self.pos + k, len(self.toks) - 1)]

    def at(self, kind: str, text: str | None = None) -> bool:
        tk, tt = self.peek()
        return tk == kind and (text is None or tt == text)

    def at_op(self, *ops: str) -> bool:
        tk, tt = self.peek()
        return tk == "op" and tt in ops

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.pos += 1
        return tok

    def expect(self, kind: str, text: str | None = None) -> str:
        tk, tt = self.peek()
        if tk != kind or (text is not None and tt != text):
            raise _AwkError(f"syntax error at '{tt or 'end of program'}'")
        self.pos += 1
        return tt

    def newlines(self) -> None:
        while self.at("nl"):
            self.pos += 1

    def terminators(self) -> None:
        while self.at("nl") or self.at_op(";"):
            self.pos += 1

    # program
    def parse(self) -> tuple[list[Any], dict[str, Any]]:
        items: list[Any] = []
        funcs: dict[str, Any] = {}
        self.terminators()
        while not self.at("eof"):
            if self.at("kw", "BEGIN") or self.at("kw", "END"):
                which = self.take()[1].lower()
                self.newlines()
                items.append((which, self.block()))
            elif self.at("kw", "function") or self.at("kw", "func"):
                self.take()
                name = self.take()
                if name[0] not in ("func", "name"):
                    raise _AwkError(f"bad function name '{name[1]}'")
                self.expect("op", "(")
                params: list[str] = []
                while not self.at_op(")"):
                    params.append(self.expect("name"))
                    if self.at_op(","):
                        self.take()
                        self.newlines()
                self.expect("op", ")")
                self.newlines()
                funcs[name[1]] = (params, self.block())
            else:
                pattern = None if self.at_op("{") else self.expr()
                pattern2 = None
                if pattern is not None and self.at_op(","):
                    self.take()
                    self.newlines()
                    pattern2 = self.expr()
                body = self.block() if self.at_op("{") else None
                items.append(("rule", pattern, pattern2, body))
            self.terminators()
        return items, funcs

    def block(self) -> Any:
        self.expect("op", "{")
        stmts: list[Any] = []
        self.terminators()
        while not self.at_op("}"):
            stmts.append(self.statement())
            self.terminators()
        self.expect("op", "}")
        return ("block", stmts)

    def simple_end(self) -> None:
        if self.at_op(";") or self.at("nl"):
            self.take()
        elif not (self.at_op("}") or self.at("eof")):
            raise _AwkError(f"syntax error at '{self.peek()[1]}'")

    def statement(self) -> Any:
        if self.at_op("{"):
            return self.block()
        if self.at_op(";"):
            self.take()
            return ("block", [])
        kind, text = self.peek()
        if kind == "kw":
            if text == "if":
                self.take()
                self.expect("op", "(")
                cond = self.expr()
                self.expect("op", ")")
                self.newlines()
                then = self.statement()
                save = self.pos
                self.terminators()
                if self.at("kw", "else"):
                    self.take()
                    self.newlines()
                    return ("if", cond, then, self.statement())
                self.pos = save
                return ("if", cond, then, None)
            if text == "while":
                self.take()
                self.expect("op", "(")
                cond = self.expr()
                self.expect("op", ")")
                if self.at_op(";"):
                    self.take()
                    return ("while", cond, ("block", []))
                self.newlines()
                return ("while", cond, self.statement())
            if text == "do":
                self.take()
                self.newlines()
                body = self.statement()
                self.terminators()
                self.expect("kw", "while")
                self.expect("op", "(")
                cond = self.expr()
                self.expect("op", ")")
                self.simple_end()
                return ("do", body, cond)
            if text == "for":
                return self.for_statement()
            if text in ("break", "continue", "next", "nextfile"):
                self.take()
                self.simple_end()
                return ("next",) if text == "nextfile" else (text,)
            if text in ("exit", "return"):
                self.take()
                value = None
                if not (self.at_op(";", "}") or self.at("nl") or self.at("eof")):
                    value = self.expr()
                self.simple_end()
                return (text, value)
            if text == "delete":
                self.take()
                name = self.expect("name")
                subs = None
                if self.at_op("["):
                    self.take()
                    subs = self.expr_list()
                    self.expect("op", "]")
                self.simple_end()
                return ("delete", name, subs)
            if text in ("print", "printf"):
                stmt = self.print_statement()
                self.simple_end()
                return stmt
            if text == "getline":
                raise _AwkError("getline is not supported")
        node = self.expr()
        self.simple_end()
        return ("expr", node)

    def for_statement(self) -> Any:
        self.take()
        self.expect("op", "(")
        if (
            self.peek()[0] == "name"
            and self.peek(1) == ("kw", "in")
            and self.peek(2)[0] == "name"
            and self.peek(3) == ("op", ")")
        ):
            var = self.take()[1]
            self.take()
            arr = self.take()[1]
            self.take()
            self.newlines()
            return ("forin", var, arr, self.statement())
        init = None if self.at_op(";") else self.simple_or_expr()
        self.expect("op", ";")
        self.newlines()
        cond = None if self.at_op(";") else self.expr()
        self.expect("op", ";")
        self.newlines()
        step = None if self.at_op(")") else self.simple_or_expr()
        self.expect("op", ")")
        if self.at_op(";"):
            self.take()
            return ("for", init, cond, step, ("block", []))
        self.newlines()
        return ("for", init, cond, step, self.statement())

    def simple_or_expr(self) -> Any:
        return ("expr", self.expr())

    def print_statement(self) -> Any:
        kind = self.take()[1]
        args: list[Any] = []
        if not (self.at_op(";", "}", ">", "|") or self.at("nl") or self.at("eof")):
            save = self.pos
            parsed = False
            if self.at_op("("):
                self.take()
                try:
                    inner = self.expr_list()
                    if self.at_op(")"):
                        self.take()
                        if self.at_op(";", "}", ">", "|") or self.at("nl") or self.at("eof"):
                            args = inner
                            parsed = True
                except _AwkError:
                    pass
                if not parsed:
                    self.pos = save
            if not parsed:
                self.no_gt += 1
                try:
                    args = self.expr_list()
                finally:
                    self.no_gt -= 1
        if self.at_op("|"):
            raise _AwkError("print | command is not supported (no host processes)")
        redirect = None
        if self.at_op(">", ">>"):
            mode = self.take()[1]
            self.no_gt += 1
            try:
                redirect = (mode, self.concat())
            finally:
                self.no_gt -= 1
        if kind == "printf" and not args:
            raise _AwkError("printf: no format")
        return (kind, args, redirect)

    def expr_list(self) -> list[Any]:
        items = [self.expr()]
        while self.at_op(","):
            self.take()
            self.newlines()
            items.append(self.expr())
        return items

    # expressions, lowest precedence first
    def expr(self) -> Any:
        left = self.ternary()
        if self.at("op") and self.peek()[1] in _ASSIGN_OPS:
            if left[0] not in ("var", "field", "index"):
                raise _AwkError("assignment to a non-variable")
            op = self.take()[1]
            self.newlines()
            return ("assign", op, left, self.expr())
        return left

    def ternary(self) -> Any:
        cond = self.or_()
        if self.at_op("?"):
            self.take()
            self.newlines()
            yes = self.expr()
            self.newlines()
            self.expect("op", ":")
            self.newlines()
            return ("cond", cond, yes, self.expr())
        return cond

    def or_(self) -> Any:
        left = self.and_()
        while self.at_op("||"):
            self.take()
            self.newlines()
            left = ("or", left, self.and_())
        return left

    def and_(self) -> Any:
        left = self.in_()
        while self.at_op("&&"):
            self.take()
            self.newlines()
            left = ("and", left, self.in_())
        return left

    def in_(self) -> Any:
        left = self.match()
        while self.at("kw", "in") and not self.no_in:
            self.take()
            left = ("in", [left], self.expect("name"))
        return left

    def match(self) -> Any:
        left = self.comparison()
        while self.at_op("~", "!~"):
            op = self.take()[1]
            left = ("match", op == "!~", left, self.comparison())
        return left

    def comparison(self) -> Any:
        left = self.concat()
        ops = ("<", "<=", "!=", "==", ">=") if self.no_gt else ("<", "<=", "!=", "==", ">", ">=")
        if self.at_op(*ops):
            op = self.take()[1]
            return ("cmp", op, left, self.concat())
        return left

    def starts_operand(self) -> bool:
        kind, text = self.peek()
        if kind in ("num", "str", "ere", "name", "func", "builtin"):
            return True
        return kind == "op" and text in ("$", "!", "(", "-", "+", "++", "--")

    def concat(self) -> Any:
        left = self.additive()
        while self.starts_operand() and not self.at_op("-", "+", "!"):
            left = ("concat", left, self.additive())
        return left

    def additive(self) -> Any:
        left = self.multiplicative()
        while self.at_op("+", "-"):
            op = self.take()[1]
            left = ("arith", op, left, self.multiplicative())
        return left

    def multiplicative(self) -> Any:
        left = self.unary()
        while self.at_op("*", "/", "%"):
            op = self.take()[1]
            left = ("arith", op, left, self.unary())
        return left

    def unary(self) -> Any:
        if self.at_op("!"):
            self.take()
            return ("not", self.unary())
        if self.at_op("-", "+"):
            op = self.take()[1]
            return ("neg", self.unary()) if op == "-" else ("num", self.unary())
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.at_op("^"):
            self.take()
            return ("arith", "^", base, self.power_rhs())
        return base

    def power_rhs(self) -> Any:
        if self.at_op("-", "+", "!"):
            return self.unary()
        return self.power()

    def postfix(self) -> Any:
        if self.at_op("++", "--"):
            op = self.take()[1]
            target = self.postfix()
            if target[0] not in ("var", "field", "index"):
                raise _AwkError(f"{op} of a non-variable")
            return ("preinc", 1 if op == "++" else -1, target)
        node = self.primary()
        if node[0] in ("var", "field", "index") and self.at_op("++", "--"):
            op = self.take()[1]
            return ("postinc", 1 if op == "++" else -1, node)
        return node

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return ("const", float(text))
        if kind == "str":
            return ("const", text)
        if kind == "ere":
            return ("regex", _awk_regex(text))
        if kind == "op" and text == "$":
            if self.at_op("++", "--"):
                return ("field", self.postfix())
            if self.at_op("-"):
                self.take()
                return ("field", ("neg", self.primary()))
            return ("field", self.primary())
        if kind == "op" and text == "(":
            saved, self.no_gt = self.no_gt, 0
            saved_in, self.no_in = self.no_in, 0
            try:
                items = self.expr_list()
            finally:
                self.no_gt = saved
                self.no_in = saved_in
            self.expect("op", ")")
            if len(items) > 1:
                if not self.at("kw", "in"):
                    raise _AwkError("syntax error: a list outside of print")
                self.take()
                return ("in", items, self.expect("name"))
            return ("group", items[0])
        if kind == "name":
            if self.at_op("["):
                self.take()
                subs = self.expr_list()
                self.expect("op", "]")
                return ("index", text, subs)
            return ("var", text)
        if kind == "func":
            self.expect("op", "(")
            args = [] if self.at_op(")") else self.expr_list()
            self.expect("op", ")")
            return ("call", text, args)
        if kind == "builtin":
            args = []
            if self.at_op("("):
                self.take()
                args = [] if self.at_op(")") else self.expr_list()
                self.expect("op", ")")
            elif text != "length":
                raise _AwkError(f"{text} needs arguments")
            return ("builtin", text, args)
        if kind == "op" and text == "-":
            return ("neg", self.unary())
        if kind == "kw" and text == "getline":
            raise _AwkError("getline is not supported")
        raise _AwkError(f"syntax error at '{text or 'end of program'}'")


class _AwkNextError(Exception):
    pass


class _AwkExitError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _AwkBreakError(Exception):
    pass


class _AwkContinueError(Exception):
    pass


class _AwkReturnError(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def _awk_num(value: Any) -> float:
    if isinstance(value, float):
        return value
    m = _NUMBER_PREFIX.match(value)
    return float(m.group()) if m else 0.0


def _awk_fmt_num(value: float, fmt: str = "%.6g") -> str:
    if math.isnan(value) or math.isinf(value):
        return ("-" if value < 0 else "") + ("nan" if math.isnan(value) else "inf")
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return fmt % value


def _awk_is_numeric(value: Any) -> bool:
    if isinstance(value, float | _Uninit):
        return True
    return isinstance(value, _StrNum) and bool(_LOOKS_NUMERIC.match(value))


class _AwkRun:
    """One run of a parsed program over its inputs."""

    def __init__(
        self, items: list[Any], funcs: dict[str, Any], env: dict[str, str], limits: Any
    ) -> None:
        self.items = items
        self.funcs = funcs
        self.limits = limits
        self.vars: dict[str, Any] = {
            "FS": " ", "OFS": " ", "ORS": "\n", "RS": "\n", "NR": 0.0, "NF": 0.0, "FNR": 0.0,
            "SUBSEP": "\034", "RSTART": 0.0, "RLENGTH": -1.0, "CONVFMT": "%.6g",
            "OFMT": "%.6g", "FILENAME": "",
            "ENVIRON": {k: _StrNum(v) for k, v in env.items()},
        }  # fmt: skip
        self.frames: list[dict[str, Any]] = []
        self.out: list[str] = []
        self.err: list[str] = []
        #: Files printed to: (">" or ">>", pieces), written when the run ends.
        self.files: dict[str, tuple[str, list[str]]] = {}
        self.record = ""
        self.fields: list[str] | None = []
        self.ranges: dict[int, bool] = {}
        self.rand = random.Random(0)
        self.seed = 0.0

    # values
    def str_of(self, value: Any) -> str:
        if isinstance(value, float):
            return _awk_fmt_num(value, self.vars["CONVFMT"])
        if isinstance(value, dict):
            raise _AwkError("attempt to use an array in a scalar context")
        return str(value)

    def out_str(self, value: Any) -> str:
        if isinstance(value, float):
            return _awk_fmt_num(value, self.vars["OFMT"])
        return self.str_of(value)

    def truth(self, value: Any) -> bool:
        if isinstance(value, float):
            return value != 0
        if isinstance(value, _StrNum) and _LOOKS_NUMERIC.match(value):
            return float(value) != 0
        return bool(value != "")

    def tick(self) -> None:
        _ = self.limits.max_awk_iterations if self.limits is not None else 0

    # fields
    def split_record(self) -> list[str]:
        if self.fields is None:
            self.fields = self.split(self.record, self.str_of(self.vars["FS"]))
            self.vars["NF"] = float(len(self.fields))
        return self.fields

    def split(self, text: str, fs: str) -> list[str]:
        if fs == " ":
            return text.split()
        if text == "":
            return []
        if len(fs) == 1 and fs != "\\":
            return text.split(fs)
        return _awk_regex(fs).split(text)

    def set_record(self, text: str) -> None:
        self.record = text
        self.fields = None
        self.split_record()

    def get_field(self, index: int) -> Any:
        if index < 0:
            raise _AwkError(f"attempt to access field {index}")
        if index == 0:
            return _StrNum(self.record)
        fields = self.split_record()
        return _StrNum(fields[index - 1]) if index <= len(fields) else _UNINIT

    def set_field(self, index: int, value: str) -> None:
        if index == 0:
            self.set_record(value)
            return
        fields = self.split_record()
        while len(fields) < index:
            fields.append("")
        fields[index - 1] = value
        self.vars["NF"] = float(len(fields))
        self.record = self.str_of(self.vars["OFS"]).join(fields)

    def set_nf(self, count: int) -> None:
        fields = self.split_record()
        del fields[count:]
        while len(fields) < count:
            fields.append("")
        self.record = self.str_of(self.vars["OFS"]).join(fields)

    # variables
    def scope(self, name: str) -> dict[str, Any]:
        if self.frames and name in self.frames[-1]:
            return self.frames[-1]
        return self.vars

    def get_var(self, name: str) -> Any:
        if name == "NF":
            self.split_record()
        value = self.scope(name).get(name, _UNINIT)
        if isinstance(value, dict):
            raise _AwkError(f"attempt to use array {name} in a scalar context")
        return value

    def set_var(self, name: str, value: Any) -> None:
        scope = self.scope(name)
        if isinstance(scope.get(name), dict):
            raise _AwkError(f"attempt to use array {name} in a scalar context")
        scope[name] = value
        if name == "NF":
            self.set_nf(int(_awk_num(value)))

    def array(self, name: str) -> dict[str, Any]:
        scope = self.scope(name)
        value = scope.get(name)
        if value is None or isinstance(value, _Uninit):
            value = scope[name] = {}
        if not isinstance(value, dict):
            raise _AwkError(f"attempt to use scalar {name} as an array")
        return value

    def key(self, subs: list[Any]) -> str:
        return self.str_of(self.vars["SUBSEP"]).join(self.str_of(self.eval(s)) for s in subs)

    # lvalues
    def load(self, target: Any) -> Any:
        kind = target[0]
        if kind == "var":
            return self.get_var(target[1])
        if kind == "field":
            return self.get_field(int(_awk_num(self.eval(target[1]))))
        return self.array(target[1]).get(self.key(target[2]), _UNINIT)

    def store(self, target: Any, value: Any) -> Any:
        kind = target[0]
        if kind == "var":
            self.set_var(target[1], value)
        elif kind == "field":
            self.set_field(int(_awk_num(self.eval(target[1]))), self.str_of(value))
        else:
            self.array(target[1])[self.key(target[2])] = value
        return value

    # expressions
    def eval(self, node: Any) -> Any:
        kind = node[0]
        if kind == "const":
            return node[1]
        if kind == "var":
            return self.get_var(node[1])
        if kind == "field":
            return self.get_field(int(_awk_num(self.eval(node[1]))))
        if kind == "index":
            arr = self.array(node[1])
            key = self.key(node[2])
            if key not in arr:
                arr[key] = _UNINIT
            return arr[key]
        if kind == "group":
            return self.eval(node[1])
        if kind == "regex":
            return 1.0 if node[1].search(self.record) else 0.0
        if kind == "assign":
            op, target = node[1], node[2]
            value = self.eval(node[3])
            if op != "=":
                value = self.arith(op[0], self.load(target), value)
            elif isinstance(value, _Uninit):
                value = _UNINIT
            return self.store(target, value)
        if kind == "cond":
            return self.eval(node[2]) if self.truth(self.eval(node[1])) else self.eval(node[3])
        if kind == "or":
            return 1.0 if self.truth(self.eval(node[1])) or self.truth(self.eval(node[2])) else 0.0
        if kind == "and":
            return 1.0 if self.truth(self.eval(node[1])) and self.truth(self.eval(node[2])) else 0.0
        if kind == "in":
            return 1.0 if self.key(node[1]) in self.array(node[2]) else 0.0
        if kind == "match":
            text = self.str_of(self.eval(node[2]))
            found = self.regex_of(node[3]).search(text) is not None
            return 1.0 if found != node[1] else 0.0
        if kind == "cmp":
            return 1.0 if self.compare(node[1], self.eval(node[2]), self.eval(node[3])) else 0.0
        if kind == "concat":
            return self.str_of(self.eval(node[1])) + self.str_of(self.eval(node[2]))
        if kind == "arith":
            return self.arith(node[1], self.eval(node[2]), self.eval(node[3]))
        if kind == "not":
            return 0.0 if self.truth(self.eval(node[1])) else 1.0
        if kind == "neg":
            return -_awk_num(self.eval(node[1]))
        if kind == "num":
            return _awk_num(self.eval(node[1]))
        if kind == "preinc":
            return self.store(node[2], _awk_num(self.load(node[2])) + node[1])
        if kind == "postinc":
            old = _awk_num(self.load(node[2]))
            self.store(node[2], old + node[1])
            return old
        if kind == "builtin":
            return self.builtin(node[1], node[2])
        if kind == "call":
            return self.call(node[1], node[2])
        raise _AwkError(f"cannot evaluate {kind}")

    def regex_of(self, node: Any) -> re.Pattern[str]:
        if node[0] == "regex":
            pattern: re.Pattern[str] = node[1]
            return pattern
        return _awk_regex(self.str_of(self.eval(node)))

    def compare(self, op: str, left: Any, right: Any) -> bool:
        a: Any
        b: Any
        if _awk_is_numeric(left) and _awk_is_numeric(right):
            a, b = _awk_num(left), _awk_num(right)
        else:
            a, b = self.str_of(left), self.str_of(right)
        return bool(
            {"<": a < b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, ">=": a >= b}[op]
        )

    def arith(self, op: str, left: Any, right: Any) -> float:
        a, b = _awk_num(left), _awk_num(right)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "^":
            try:
                return float(a**b)
            except (OverflowError, ZeroDivisionError):
                return math.inf
        if b == 0:
            raise _AwkError("division by zero" + (" in %" if op == "%" else ""))
        return a / b if op == "/" else math.fmod(a, b)

    def builtin(self, name: str, args: list[Any]) -> Any:
        if name == "length":
            if not args:
                return float(len(self.record))
            if args[0][0] == "var" and isinstance(self.scope(args[0][1]).get(args[0][1]), dict):
                return float(len(self.array(args[0][1])))
            return float(len(self.str_of(self.eval(args[0]))))
        if name in ("sub", "gsub"):
            return self.substitute(args, every=name == "gsub")
        if name == "split":
            text = self.str_of(self.eval(args[0]))
            if len(args) > 2:
                parts = (
                    self.regex_of(args[2]).split(text)
                    if args[2][0] == "regex"
                    else self.split(text, self.str_of(self.eval(args[2])))
                )
            else:
                parts = self.split(text, self.str_of(self.vars["FS"]))
            if args[1][0] != "var":
                raise _AwkError("split: second argument is not an array")
            arr = self.array(args[1][1])
            arr.clear()
            for i, part in enumerate(parts, 1):
                arr[str(i)] = _StrNum(part)
            return float(len(parts))
        values = [self.eval(a) for a in args]
        if name == "substr":
            text = self.str_of(values[0])
            start = _awk_round(_awk_num(values[1]))
            end = len(text) + 1 if len(values) < 3 else start + _awk_round(_awk_num(values[2]))
            lo, hi = max(start, 1), min(end, len(text) + 1)
            return text[lo - 1 : hi - 1] if hi > lo else ""
        if name == "index":
            return float(self.str_of(values[0]).find(self.str_of(values[1])) + 1)
        if name == "match":
            m = self.regex_of(args[1]).search(self.str_of(values[0]))
            self.vars["RSTART"] = float(m.start() + 1) if m else 0.0
            self.vars["RLENGTH"] = float(m.end() - m.start()) if m else -1.0
            return self.vars["RSTART"]
        if name == "sprintf":
            if not values:
                raise _AwkError("sprintf: no format")
            return self.format(self.str_of(values[0]), values[1:])
        if name == "tolower":
            return self.str_of(values[0]).lower()
        if name == "toupper":
            return self.str_of(values[0]).upper()
        if name == "int":
            return float(math.trunc(_awk_num(values[0])))
        if name in ("sqrt", "exp", "log", "sin", "cos"):
            try:
                return float(getattr(math, name)(_awk_num(values[0])))
            except (ValueError, OverflowError):
                return math.nan
        if name == "atan2":
            return math.atan2(_awk_num(values[0]), _awk_num(values[1]))
        if name == "rand":
            return self.rand.random()
        if name == "srand":
            old = self.seed
            self.seed = _awk_num(values[0]) if values else float(int(time.time()))
            self.rand.seed(self.seed)
            return old
        if name in ("close", "fflush"):
            return 0.0
        raise _AwkError(f"{name}() is not supported (no host processes)")

    def substitute(self, args: list[Any], *, every: bool) -> float:
        pattern = self.regex_of(args[0])
        repl = self.str_of(self.eval(args[1]))
        target = args[2] if len(args) > 2 else ("field", ("const", 0.0))
        if target[0] not in ("var", "field", "index"):
            raise _AwkError("sub/gsub: third argument is not a variable")
        text = self.str_of(self.load(target))
        count = 0

        def replace(m: re.Match[str]) -> str:
            nonlocal count
            count += 1
            out: list[str] = []
            i = 0
            while i < len(repl):
                if repl[i] == "\\" and i + 1 < len(repl) and repl[i + 1] in "&\\":
                    out.append(repl[i + 1])
                    i += 2
                    continue
                out.append(m.group() if repl[i] == "&" else repl[i])
                i += 1
            return "".join(out)

        new = pattern.sub(replace, text, count=0 if every else 1)
        if count:
            self.store(target, new)
        return float(count)

    def format(self, fmt: str, values: list[Any]) -> str:
        out: list[str] = []
        i = 0
        k = 0

        def take() -> Any:
            nonlocal k
            value = values[k] if k < len(values) else _UNINIT
            k += 1
            return value

        while i < len(fmt):
            c = fmt[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            if fmt.startswith("%%", i):
                out.append("%")
                i += 2
                continue
            j = i + 1
            spec = "%"
            while j < len(fmt) and fmt[j] in "-+ #0":
                spec += fmt[j]
                j += 1
            for _part in range(2):
                if j < len(fmt) and fmt[j] == "*":
                    spec += str(int(_awk_num(take())))
                    j += 1
                while j < len(fmt) and fmt[j].isdigit():
                    spec += fmt[j]
                    j += 1
                if _part == 0 and j < len(fmt) and fmt[j] == ".":
                    spec += "."
                    j += 1
                else:
                    break
            if j >= len(fmt):
                out.append(fmt[i:])
                break
            conv = fmt[j]
            if conv in "di":
                out.append((spec + "d") % math.trunc(_awk_num(take())))
            elif conv in "ouxX":
                value = math.trunc(_awk_num(take()))
                out.append((spec + ("d" if conv == "u" else conv)) % value)
            elif conv in "eEfFgG":
                out.append((spec + conv) % _awk_num(take()))
            elif conv == "c":
                value = take()
                char = (
                    chr(int(_awk_num(value)))
                    if isinstance(value, float)
                    else self.str_of(value)[:1]
                )
                out.append((spec + "s") % char)
            elif conv == "s":
                out.append((spec + "s") % self.out_str(take()))
            else:
                out.append(fmt[i : j + 1])
            i = j + 1
        return "".join(out)

    def call(self, name: str, args: list[Any]) -> Any:
        if name not in self.funcs:
            raise _AwkError(f"function {name} never defined")
        params, body = self.funcs[name]
        if len(args) > len(params):
            raise _AwkError(f"function {name} called with too many arguments")
        frame: dict[str, Any] = {}
        for param, arg in zip(params, args, strict=False):
            if arg[0] == "var":
                current = self.scope(arg[1]).get(arg[1])
                if isinstance(current, dict):
                    frame[param] = current
                    continue
                if current is None:  # an untyped global: becomes an array if used as one
                    frame[param] = self.eval(arg)
                    continue
            frame[param] = self.eval(arg)
        for param in params[len(args) :]:
            frame[param] = _UNINIT
        if len(self.frames) > 200:
            raise _AwkError("function call nesting too deep")
        self.frames.append(frame)
        try:
            self.run_stmt(body)
        except _AwkReturnError as ret:
            return ret.value
        finally:
            self.frames.pop()
        return _UNINIT

    # statements
    def run_stmt(self, node: Any) -> None:
        kind = node[0]
        if kind == "block":
            for stmt in node[1]:
                self.run_stmt(stmt)
        elif kind == "expr":
            self.eval(node[1])
        elif kind == "print":
            values = [self.out_str(self.eval(a)) for a in node[1]] if node[1] else [self.record]
            self.emit(
                self.str_of(self.vars["OFS"]).join(values) + self.str_of(self.vars["ORS"]),
                node[2],
            )
        elif kind == "printf":
            values = [self.eval(a) for a in node[1]]
            self.emit(self.format(self.str_of(values[0]), values[1:]), node[2])
        elif kind == "if":
            if self.truth(self.eval(node[1])):
                self.run_stmt(node[2])
            elif node[3] is not None:
                self.run_stmt(node[3])
        elif kind in ("while", "do", "for"):
            self.loop(node)
        elif kind == "forin":
            for key in list(self.array(node[2])):
                self.tick()
                self.set_var(node[1], _StrNum(key))
                try:
                    self.run_stmt(node[3])
                except _AwkBreakError:
                    break
                except _AwkContinueError:
                    continue
        elif kind == "next":
            raise _AwkNextError
        elif kind == "exit":
            raise _AwkExitError(int(_awk_num(self.eval(node[1]))) if node[1] is not None else 0)
        elif kind == "return":
            raise _AwkReturnError(self.eval(node[1]) if node[1] is not None else _UNINIT)
        elif kind == "break":
            raise _AwkBreakError
        elif kind == "continue":
            raise _AwkContinueError
        elif kind == "delete":
            arr = self.array(node[1])
            if node[2] is None:
                arr.clear()
            else:
                arr.pop(self.key(node[2]), None)

    def emit(self, text: str, redirect: Any) -> None:
        """Output to stdout, or to a file (``>`` truncates at its first use, ``>>`` appends)."""
        if redirect is None:
            self.out.append(text)
            return
        name = self.str_of(self.eval(redirect[1]))
        if name in ("/dev/stdout", "-"):
            self.out.append(text)
        elif name == "/dev/stderr":
            self.err.append(text)
        else:
            self.files.setdefault(name, (redirect[0], []))[1].append(text)

    def loop(self, node: Any) -> None:
        kind = node[0]
        if kind == "for" and node[1] is not None:
            self.run_stmt(node[1])
        first = True
        while True:
            self.tick()
            if kind == "while" and not self.truth(self.eval(node[1])):
                break
            if kind == "for" and node[2] is not None and not self.truth(self.eval(node[2])):
                break
            if kind == "do" and not first and not self.truth(self.eval(node[2])):
                break
            first = False
            body = node[1] if kind == "do" else node[-1]
            try:
                self.run_stmt(body)
            except _AwkBreakError:
                break
            except _AwkContinueError:
                pass
            if kind == "for" and node[3] is not None:
                self.run_stmt(node[3])

    def matches(self, index: int, item: Any) -> bool:
        pattern, pattern2 = item[1], item[2]
        if pattern is None:
            return True
        if pattern2 is None:
            return self.truth(self.eval(pattern))
        if self.ranges.get(index):
            if self.truth(self.eval(pattern2)):
                self.ranges[index] = False
            return True
        if self.truth(self.eval(pattern)):
            self.ranges[index] = not self.truth(self.eval(pattern2))
            return True
        return False

    def run(self, inputs: list[tuple[str, str | None, str | None]]) -> int:
        """Run over ``inputs``: (name, text, error) per operand; text None is ``var=value``."""
        code = 0
        try:
            try:
                for item in self.items:
                    if item[0] == "begin":
                        self.run_stmt(item[1])
                rules = [(i, it) for i, it in enumerate(self.items) if it[0] == "rule"]
                if rules or any(it[0] == "end" for it in self.items):
                    for name, text, error in inputs:
                        if error is not None:
                            raise _AwkError(error)
                        if text is None:
                            var, _, value = name.partition("=")
                            self.vars[var] = _StrNum(_awk_unescape(value))
                            continue
                        self.vars["FILENAME"] = "" if name == "-" else name
                        self.vars["FNR"] = 0.0
                        for record in self.records(text):
                            self.tick()
                            self.vars["NR"] = _awk_num(self.vars["NR"]) + 1
                            self.vars["FNR"] = _awk_num(self.vars["FNR"]) + 1
                            self.set_record(record)
                            try:
                                for index, rule in rules:
                                    if self.matches(index, rule):
                                        if rule[3] is None:
                                            self.run_stmt(("print", [], None))
                                        else:
                                            self.run_stmt(rule[3])
                            except _AwkNextError:
                                continue
            except _AwkExitError as done:
                code = done.code
            for item in self.items:
                if item[0] == "end":
                    self.run_stmt(item[1])
        except _AwkExitError as done:
            code = done.code
        return code

    def records(self, text: str) -> list[str]:
        rs = self.str_of(self.vars["RS"])
        if rs == "":
            return [p.strip("\n") for p in re.split(r"\n\n+", text.strip("\n")) if p]
        sep = rs[0] if len(rs) == 1 else None
        parts = text.split(sep) if sep is not None else _awk_regex(rs).split(text)
        if parts and parts[-1] == "":
            parts.pop()
        return parts


def _awk_round(value: float) -> int:
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


class _Awk:
    """``awk [-F FS] [-v VAR=VALUE]... [-f FILE | 'PROGRAM'] [FILE | VAR=VALUE]...`` (POSIX awk)."""

    name = "awk"

    async def execute(self, args: list[str], ctx: CommandContext) -> _JbResult:
        fs_value: str | None = None
        assigns: list[str] = []
        program: str | None = None
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if arg in ("-F", "-v", "-f") and i + 1 < len(args):
                value = args[i + 1]
                i += 2
            elif arg[:2] in ("-F", "-v", "-f") and len(arg) > 2:
                value = arg[2:]
                i += 1
            elif arg.startswith("-") and arg != "-":
                return _JbResult("", f"awk: unknown option {arg}\n", 2)
            else:
                break
            if arg.startswith("-F"):
                fs_value = "\t" if value == "t" else _awk_unescape(value)
            elif arg.startswith("-v"):
                if "=" not in value:
                    return _JbResult("", f"awk: bad -v assignment '{value}'\n", 2)
                assigns.append(value)
            else:
                try:
                    data = await ctx.fs.read_file_bytes(ctx.fs.resolve_path(ctx.cwd, value))
                except OSError as exc:
                    return _JbResult("", f"awk: {value}: {_strerror(exc)}\n", 2)
                program = (program or "") + data.decode("utf-8", "surrogateescape") + "\n"
        if program is None:
            if i >= len(args):
                return _JbResult("", "usage: awk [-F fs][-v var=value][prog | -f progfile]\n", 2)
            program = args[i]
            i += 1
        operands = args[i:]
        try:
            items, funcs = _AwkParser(program).parse()
        except _AwkError as exc:
            return _JbResult("", f"awk: {exc}\n", 2)
        inputs: list[tuple[str, str | None, str | None]] = []
        for name in operands or ["-"]:
            if re.match(r"[A-Za-z_]\w*=", name):
                inputs.append((name, None, None))
            elif name in ("-", "/dev/stdin"):
                inputs.append(("-", ctx.stdin, None))
            else:
                try:
                    data = await ctx.fs.read_file_bytes(ctx.fs.resolve_path(ctx.cwd, name))
                    inputs.append((name, data.decode("utf-8", "surrogateescape"), None))
                except OSError as exc:
                    inputs.append((name, None, f'cannot open "{name}": {_strerror(exc)}'))
        if all(text is None and error is None for _, text, error in inputs):
            inputs.append(("-", ctx.stdin, None))
        run = _AwkRun(items, funcs, dict(ctx.env), ctx.limits)
        if fs_value is not None:
            run.vars["FS"] = fs_value
        for assign in assigns:
            var, _, value = assign.partition("=")
            run.vars[var] = _StrNum(_awk_unescape(value))
        error = ""
        try:
            code = run.run(inputs)
        except _AwkError as exc:
            code, error = 2, f"awk: {exc}\n"
        except RecursionError:
            code, error = 2, "awk: expression nesting too deep\n"
        for name, (mode, pieces) in run.files.items():
            path = ctx.fs.resolve_path(ctx.cwd, name)
            try:
                if mode == ">":
                    await ctx.fs.write_file(path, "".join(pieces))
                else:
                    await ctx.fs.append_file(path, "".join(pieces))
            except OSError as exc:
                code, error = 2, error + f"awk: can't redirect to {name}: {_strerror(exc)}\n"
        return _JbResult("".join(run.out), "".join(run.err) + error, code)


__all__ = ["Bash", "ExecResult", "TIMEOUT_EXIT"]

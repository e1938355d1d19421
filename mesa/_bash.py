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
import shlex
import time
from collections.abc import Callable, Coroutine
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
            raise ValueError("timeout_ms must be a positive int")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise ValueError("cwd must be an absolute mount path")
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
            except Exception as exc:  # an interpreter bug: still a result, not a raise
                return ExecResult(b"", _bytes(f"bash: internal error: {exc!r}\n"), 2)
            finally:
                self._limits.stop()
            return ExecResult(_bytes(result.stdout), _bytes(result.stderr), result.exit_code)


def _timed_out(timeout_ms: int) -> ExecResult:
    return ExecResult(b"", _bytes(f"bash: timeout: stopped after {timeout_ms} ms\n"), TIMEOUT_EXIT)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


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


__all__ = ["Bash", "ExecResult", "TIMEOUT_EXIT"]

"""Output of the ``mesa`` CLI: consoles, tables, progress, one-line errors, exit codes.

Every command prints through here so tables, colours and errors look alike. Colour
and progress appear only on a terminal (rich decides from the stream; ``NO_COLOR``
turns colour off); piped output is plain text, one record a line.

Exit codes (docs/cli.md):

* 0 -- success;
* 1 -- the operation failed (not found, conflict, refused, an unpublished write ...);
* 2 -- bad usage: an unknown option, an invalid name, an ambiguous change prefix,
  a missing credential;
* 3 -- the server is unreachable or cannot start (a port in use, no nats-server);
* 130 -- interrupted (Ctrl-C);
* 141 -- the reader of the output went away (``mesa log | head -1``); nothing is
  printed, as for a shell command killed by SIGPIPE.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mesa.errors import (
    InvalidOptionsError,
    MesaConnectionError,
    MesaError,
    MissingCredentialError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: SDK wording that names a Python argument, and what the CLI user types instead.
_CLI_WORDS = (
    ("pass allow_backwards=True", "pass --allow-backwards"),
    ("pass api_key= or set MESA_API_KEY", "set MESA_API_KEY"),
    ("allow_conflicted=True", "--allow-conflicted"),
    ("(argument or MESA_ORG)", "(pass --org or set MESA_ORG)"),
)


def stdout() -> Console:
    """The console of command output (a fresh one: tests swap ``sys.stdout``)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr() -> Console:
    """The console of progress and errors."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def out(text: str = "", style: str | None = None) -> None:
    """Print one line of output, styled only on a terminal."""
    if style is None or not sys.stdout.isatty():
        sys.stdout.write(text + "\n")
    else:
        stdout().print(escape(text), style=style)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``columns``: a rich table on a terminal, tab-separated when piped.

    Piped output has no header, so ``| head -1`` gives the first record and ``cut -f``
    works on it.
    """
    if not sys.stdout.isatty():
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")
        return
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(escape(cell) for cell in row))
    stdout().print(grid)


@contextlib.contextmanager
def progress(description: str) -> Iterator[Any]:
    """Show a spinner with ``description`` on a terminal while the block runs.

    Yields a function ``update(text)`` that changes the description. Nothing is shown
    when stderr is not a terminal.
    """
    if not sys.stderr.isatty():
        yield lambda text: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda text: bar.update(task, description=text)


def start_progress(description: str) -> Callable[[], None]:
    """Start a spinner with ``description`` on a terminal; return the function that stops it.

    For work that does not fit a ``with`` block (a mount is ready inside a callback).
    """
    context = progress(description)
    context.__enter__()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            context.__exit__(None, None, None)

    return stop


def cli_words(message: str) -> str:
    """Rewrite SDK wording (Python arguments) into the CLI's flags."""
    for sdk, cli in _CLI_WORDS:
        message = message.replace(sdk, cli)
    return message


def error(command: str, message: str) -> None:
    """Print ``mesa COMMAND: error: MESSAGE`` as one line on stderr."""
    text = " ".join(cli_words(str(message)).split())
    sys.stderr.write(f"{command}: error: {text}\n")
    sys.stderr.flush()


def describe(exc: BaseException) -> str:
    """The message of a failure for ``error``: an ``OSError`` as ``PATH: REASON``.

    ``str(OSError)`` reads ``[Errno 2] reason: 'path'``; the CLI says what a shell
    tool says.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def exit_code(exc: BaseException) -> int:
    """The documented exit code of a failure (see module docstring)."""
    if isinstance(exc, InvalidOptionsError | MissingCredentialError):
        return EXIT_USAGE
    if isinstance(exc, MesaConnectionError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, MesaError | OSError):
        return EXIT_FAILED
    return EXIT_FAILED


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

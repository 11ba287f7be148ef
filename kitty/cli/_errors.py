"""How a command ends on an error: a user's mistake is one red line, anything else a bug.

A :class:`kitty.errors.UserError` says what was wrong and what to do: its text is printed
as ``error: ...`` and the exit code is 2. Any other exception is a bug: one line names it
with an error id, the traceback goes to the ``kitty.cli`` log under that id, exit code 1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click
import typer
from rich.markup import escape
from typer.exceptions import TyperException

from kitty.cli._console import err_console
from kitty.errors import UserError, new_error_id

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

logger = logging.getLogger("kitty.cli")

P = ParamSpec("P")
R = TypeVar("R")

# How a command picks its exit code, and usage errors: never a bug.
_EXITS = (
    typer.Exit,
    typer.Abort,
    TyperException,
    click.exceptions.Exit,
    click.exceptions.Abort,
    click.ClickException,
)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one red error line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def report_bug(exc: BaseException, command: str) -> NoReturn:
    """Log ``exc`` with a new error id, name it in one line and exit with code 1."""
    error_id = new_error_id()
    logger.exception("internal error %s in kitty-orch %s", error_id, command, exc_info=exc)
    err_console.print(
        f"[bold red]internal error {error_id}:[/] "
        f"{escape(f'{type(exc).__name__}: {exc}')} (logged; please report it)"
    )
    raise typer.Exit(EXIT_BUG)


def shows_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command: :class:`UserError` becomes its message (exit 2), anything else a bug.

    Typer/click exits and usage errors pass through untouched (they are how a command
    chooses its exit code); so do ``KeyboardInterrupt`` and ``SystemExit``.
    """

    @functools.wraps(command)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except _EXITS:
            raise
        except UserError as exc:
            fail(str(exc))
        except Exception as exc:
            report_bug(exc, command.__name__)

    return guarded

"""What every command shares: the invocation's settings, JSON output and error reporting.

One way to the settings: the root callback puts an :class:`Invocation` in ``ctx.obj``; a
command asks :func:`settings` for them, with its flags as overrides. A sub-app run on its own
(tests drive them with ``CliRunner``) finds no invocation and reads the defaults.

One place prints errors: every Typer app is built by :func:`new_app`, whose group turns
streamscore's own errors and invalid settings into one line on stderr and an exit code
(2 for a setting or usage mistake, 1 for everything else). ``--log-level DEBUG`` adds the
traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from schemas.errors import ConfigError, StreamscoreError
from schemas.settings import Settings, describe_validation_error, load_settings

console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (default: ./streamscore.toml)."),
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on the last line.")
]

#: Exit code of a mistake the person can fix (a setting, a flag, a file name).
USAGE_EXIT = 2


@dataclass(frozen=True)
class Invocation:
    """What the root command was given, for every sub-command to read."""

    config: Path | None = None
    #: ``--log-level DEBUG``: errors also print their traceback.
    debug: bool = False

    def settings(self, **overrides: Any) -> Settings:
        clean = {k: v for k, v in overrides.items() if v not in (None, {})}
        return load_settings(self.config, **clean)


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    """The settings of this invocation; ``overrides`` are nested dicts from flags."""
    invocation = ctx.find_object(Invocation) or Invocation()
    return invocation.settings(**overrides)


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line; the caller raises the returned ``Exit``."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one line a person reads for ``exc``, and the exit code."""
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc), USAGE_EXIT
    if isinstance(exc, ConfigError):
        return str(exc), USAGE_EXIT
    return f"{type(exc).__name__}: {exc}", 1


#: click's error for a flag or command mistyped, missing or out of range (typer's own copy of
#: click where it has one: the base of the ``BadParameter`` it exports).
UsageError = cast(type[Exception], typer.BadParameter.__base__)


def _usage(exc: Any, ctx: Any) -> typer.Exit:
    """One line for a usage mistake, naming the command whose ``--help`` lists the flags."""
    where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
    return fail(f"{exc.format_message()} ({where} --help lists them)", USAGE_EXIT)


class GuardedGroup(TyperGroup):
    """A Typer group whose commands end in one error line, never a traceback."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            raise _usage(exc, ctx) from exc

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise _usage(exc, ctx) from exc
        except (StreamscoreError, ValidationError) as exc:
            invocation = ctx.find_object(Invocation)
            if invocation is not None and invocation.debug:
                traceback.print_exc()
            message, code = error_line(exc)
            raise fail(message, code) from exc


def new_app(**options: Any) -> typer.Typer:
    """A Typer app with the project's error handling and no shell-completion noise."""
    options.setdefault("no_args_is_help", True)
    return typer.Typer(
        cls=GuardedGroup, add_completion=False, pretty_exceptions_enable=False, **options
    )

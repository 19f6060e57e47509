"""The `flowerd` command: typer commands that read settings once and print tables or JSON.

History commands must start fast: nothing here imports Hamilton (or pandas) at module
level; only `run`, `validate` and `serve` import the pipeline layer, lazily.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from daemon.errors import FlowerdError
from daemon.settings import Settings, load_settings

app = typer.Typer(
    name="flowerd",
    help="A scheduled orchestration daemon for Hamilton pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


@app.callback()
def _global(
    ctx: typer.Context,
    base_dir: Annotated[
        Path | None,
        typer.Option("--base-dir", envvar="FLOWERD_BASE_DIR", help="Project directory."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="FLOWERD_DATABASE_URL", help="Database URL or SQLite path."),
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text | json")] = None,
) -> None:
    """Global options come before the command."""
    settings = load_settings(base_dir, database_url=db, log_level=log_level, log_format=log_format)
    ctx.obj = settings


def main() -> None:
    """Console entry point. Typer handles usage errors (exit 2); our own errors print one
    message and exit with their code (1, 2 or 3) -- never a traceback."""
    try:
        app()
    except FlowerdError as exc:
        print(f"flowerd: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_async(coro):  # noqa: ANN001 - a tiny shim so commands read as plain code
    return asyncio.run(coro)

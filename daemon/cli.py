"""The `flowerd` command: typer commands that read settings once and print tables or JSON.

History commands must start fast: nothing here imports Hamilton (or pandas) at module
level; only `run`, `validate` and `serve` import the pipeline layer, lazily.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
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
        Optional[Path],
        typer.Option("--base-dir", envvar="FLOWERD_BASE_DIR", help="Project directory."),
    ] = None,
    db: Annotated[
        Optional[str],
        typer.Option("--db", envvar="FLOWERD_DATABASE_URL", help="Database URL or SQLite path."),
    ] = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level")] = None,
    log_format: Annotated[Optional[str], typer.Option("--log-format", help="text | json")] = None,
) -> None:
    """Global options come before the command."""
    settings = load_settings(base_dir, database_url=db, log_level=log_level, log_format=log_format)
    ctx.obj = settings


def main() -> None:
    """Console entry point: user errors print one message and exit 1/2/3, never a traceback."""
    try:
        rc = app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        rc = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        rc = exc.exit_code
    except click.exceptions.Abort:
        rc = 130
    except FlowerdError as exc:
        print(f"flowerd: {exc}", file=sys.stderr)
        rc = exc.exit_code
    sys.exit(rc if isinstance(rc, int) else 0)


def run_async(coro):  # noqa: ANN001 - a tiny shim so commands read as plain code
    return asyncio.run(coro)

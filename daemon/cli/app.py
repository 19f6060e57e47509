"""The `flowerd` typer app, its global options, and the sub-apps commands hang on."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperOption

from daemon.settings import Settings, load_settings


def _flag_without_type(display_type_rich):
    """Typer's help shows a type for every option; a flag (`--json`) has no value to type."""

    def display(self, ctx):  # noqa: ANN001, ANN202
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)

    return display


TyperOption.display_type_rich = _flag_without_type(TyperOption.display_type_rich)

app = typer.Typer(
    name="flowerd",
    help="A scheduled orchestration daemon for Hamilton pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def unwrap_help(typer_app: typer.Typer) -> None:
    """Docstrings are wrapped for the source; help text is wrapped by rich for the
    terminal. Each paragraph becomes one line, so the terminal's width decides."""
    for info in typer_app.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(" ".join(part.split()) for part in text.split("\n\n")) or None
    for group in typer_app.registered_groups:
        unwrap_help(group.typer_instance)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings, read once by the global options. The first command to ask also
    checks the project and the history it needs: after its own options are parsed, so
    `--help` and usage errors come first."""
    root = ctx.find_root()
    if not root.meta.get("flowerd.checked"):
        root.meta["flowerd.checked"] = True
        check_project(root.invoked_subcommand, root.obj)
    return root.obj


def _print_version(value: bool | None) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"flowerd {version('flowerd')}")
        raise typer.Exit()


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
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="DEBUG | INFO | WARNING | ERROR (also: run --log-level).",
        ),
    ] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text | json")] = None,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """Global options come before the command."""
    settings = load_settings(base_dir, database_url=db, log_level=log_level, log_format=log_format)
    if settings.defaults:  # the schedule package is imported only for a [defaults] table
        from daemon.schedule.table import check_defaults

        check_defaults(settings)
    ctx.obj = settings


# The parts of the project (under --base-dir) each command uses. Without a database named
# explicitly, the base dir is how a command finds the history and the daemon's socket, so
# those commands need a project too (one with schedules/).
BOTH = ("schedules", "pipelines")
NEEDS_PARTS = {"validate": BOTH, "serve": BOTH, "backfill": BOTH, "rerun": BOTH, "service": BOTH}
NEEDS_PARTS |= {"run": ("pipelines",), "schedules": ("schedules",), "notify": ("schedules",)}
NEEDS_UNLESS_DB = frozenset({"runs", "stats", "db", "trigger", "pause", "resume"})
NEEDS_UNLESS_DB |= {"reload", "status", "stop", "audit"}
READS_HISTORY = frozenset({"runs", "stats", "audit"})


def check_project(command: str | None, settings: Settings) -> None:
    from daemon.project import require_history, require_project

    parts = NEEDS_PARTS.get(command or "")
    if parts is None and command in NEEDS_UNLESS_DB and not settings.database_url:
        parts = ("schedules",)
    if parts:
        require_project(settings.base_dir, parts)
    if command in READS_HISTORY:
        require_history(settings)


runs_app = typer.Typer(help="Query the run history, newest first.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")
db_app = typer.Typer(help="The history database: migrations and retention.", no_args_is_help=True)
app.add_typer(db_app, name="db")

WhenOption = typer.Option(help="ISO-8601, or a duration ago: 30m, 2h, 7d.")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the contract's JSON.")]

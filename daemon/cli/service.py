"""`flowerd service print | install`: the systemd unit for this install."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.app import app, settings_of
from daemon.errors import FlowerdError
from daemon.settings import SETTINGS_FILE, Settings, sqlite_url

# --------------------------------------------------------------------------- systemd
service_app = typer.Typer(help="The systemd unit for this install.", no_args_is_help=True)
app.add_typer(service_app, name="service")

UserFlag = Annotated[bool, typer.Option("--user", help="A unit for `systemctl --user`.")]
RunAs = Annotated[
    str | None,
    typer.Option(
        "--run-as",
        help="System units: the user to run as, or 'dynamic' for DynamicUser=yes "
        "(default: the base dir's owner; dynamic when that is root).",
    ),
]


def _unit_for(ctx: typer.Context, user: bool, run_as: str | None) -> str:
    from daemon import systemd

    settings = settings_of(ctx)
    if run_as is None:
        run_as = systemd.default_run_as(settings.base_dir)
    elif run_as == "dynamic":
        run_as = None
    exe = systemd.flowerd_executable()
    for needed in (settings.base_dir, exe) if not user and run_as is None else ():
        if not systemd.world_readable(needed):
            typer.echo(f"warning: a DynamicUser cannot read {needed}; use --run-as USER", err=True)
    return systemd.render_unit(settings, user=user, run_as=run_as, flowerd_path=exe)


@service_app.command("print")
def service_print(ctx: typer.Context, user: UserFlag = False, run_as: RunAs = None) -> None:
    """Print the flowerd.service unit for this install."""
    typer.echo(_unit_for(ctx, user, run_as), nl=False)


@service_app.command("install")
def service_install(
    ctx: typer.Context,
    user: UserFlag = False,
    run_as: RunAs = None,
    path: Annotated[Path | None, typer.Option("--path", help="Write the unit here.")] = None,
) -> None:
    """Write the unit (system-wide, or for your user manager) and say how to enable it."""
    from daemon import systemd

    target = path or systemd.unit_path(user=user)
    text = _unit_for(ctx, user, run_as)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        hint = "" if user else "; run it as root, or use --user"
        raise FlowerdError(f"cannot write {target}: {exc.strerror or exc}{hint}") from None
    typer.echo(f"wrote {target}")
    _prepare_lock(settings_of(ctx).base_dir, dynamic=not user and _dynamic(ctx, run_as))
    typer.echo(f"enable and start it:\n  {systemd.enable_commands(user=user)}")
    db = systemd.database_hint(settings_of(ctx), user=user)
    if db:
        _record_database(settings_of(ctx), db)


def _dynamic(ctx: typer.Context, run_as: str | None) -> bool:
    from daemon import systemd

    if run_as is None:
        return systemd.default_run_as(settings_of(ctx).base_dir) is None
    return run_as == "dynamic"


def _prepare_lock(base: Path, *, dynamic: bool) -> None:
    from daemon.project import prepare_lock

    try:
        prepare_lock(base, for_anyone=dynamic)
    except OSError as exc:
        typer.echo(
            f"warning: cannot create the project lock under {base}: {exc}; the service "
            "then relies on its database lock alone",
            err=True,
        )


def _record_database(settings: Settings, db: str) -> None:
    """The CLI and the service agree on one database without flags: the unit's SQLite
    file goes into the project's flowerd.toml, which every command reads."""
    base = settings.base_dir
    url = sqlite_url(Path(db)) if "%" not in db else None
    if url is None:  # this systemd cannot say where %S is: say it, write nothing
        typer.echo(f"its history:\n  flowerd --base-dir {base} --db {db} runs")
        return
    if settings.database_url == url:
        typer.echo(f"its history: {db} (named in {base / SETTINGS_FILE})")
        return
    if settings.database_url:
        typer.echo(
            f"warning: the settings name the database {settings.database_url}, but the "
            f"service keeps its history in {db}; point database_url in "
            f"{base / SETTINGS_FILE} at it so commands read the service's history",
            err=True,
        )
        return
    toml = base / SETTINGS_FILE
    line = "# written by `flowerd service install`: the service's history, for every command\n"
    line += f"database_url = {json.dumps(url)}\n"
    try:
        old = toml.read_text() if toml.exists() else ""
        toml.write_text(old + ("\n" if old and not old.endswith("\n") else "") + line)
    except OSError as exc:
        typer.echo(f"warning: cannot record the database in {toml}: {exc}", err=True)
        typer.echo(f"its history:\n  flowerd --base-dir {base} --db {db} runs")
        return
    typer.echo(f"its history: {db}; recorded in {toml}, so commands use it without --db")

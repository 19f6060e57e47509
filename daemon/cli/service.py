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

Name = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="The project's name: unit flowerd-NAME.service, state directory "
        "flowerd/NAME (default: the base dir's name).",
    ),
]


def _unit_for(ctx: typer.Context, user: bool, run_as: str | None, name: str) -> str:
    from daemon.serve import systemd

    settings = settings_of(ctx)
    if run_as is None:
        run_as = systemd.default_run_as(settings.base_dir)
    elif run_as == "dynamic":
        run_as = None
    elif not user:
        systemd.check_user(run_as)
    exe = systemd.flowerd_executable()
    for needed in (settings.base_dir, exe) if not user and run_as is None else ():
        if not systemd.world_readable(needed):
            typer.echo(f"warning: a DynamicUser cannot read {needed}; use --run-as USER", err=True)
    return systemd.render_unit(settings, user=user, run_as=run_as, flowerd_path=exe, name=name)


def _name(ctx: typer.Context, given: str | None) -> str:
    from daemon.serve import systemd

    return systemd.project_name(settings_of(ctx).base_dir, given)


@service_app.command("print")
def service_print(
    ctx: typer.Context, user: UserFlag = False, run_as: RunAs = None, name: Name = None
) -> None:
    """Print the flowerd-NAME.service unit for this install."""
    typer.echo(_unit_for(ctx, user, run_as, _name(ctx, name)), nl=False)


@service_app.command("install")
def service_install(
    ctx: typer.Context,
    user: UserFlag = False,
    run_as: RunAs = None,
    name: Name = None,
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Write the unit here, and nothing else."),
    ] = None,
) -> None:
    """Write the unit (system-wide, or for your user manager) and say how to enable it.
    Without --path it also records the service's database in flowerd.toml and creates
    the project lock; with --path it writes that file alone."""
    from daemon.serve import systemd

    name = _name(ctx, name)
    target = path or systemd.unit_path(user=user, name=name)
    text = _unit_for(ctx, user, run_as, name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        hint = "" if user else "; run it as root, or use --user"
        raise FlowerdError(f"cannot write {target}: {exc.strerror or exc}{hint}") from None
    typer.echo(f"wrote {target}")
    db = systemd.database_hint(settings_of(ctx), user=user, name=name)
    if path is not None:
        _only_the_file(ctx, user, name, db)
        return
    _prepare_lock(settings_of(ctx).base_dir, dynamic=not user and _dynamic(ctx, run_as))
    typer.echo(f"enable and start it:\n  {systemd.enable_commands(user=user, name=name)}")
    if db:
        _record_database(settings_of(ctx), db)


def _only_the_file(ctx: typer.Context, user: bool, name: str, db: str | None) -> None:
    """--path: the unit alone; say what installing it takes."""
    from daemon.serve import systemd

    target = systemd.unit_path(user=user, name=name)
    typer.echo("nothing else was written (--path): flowerd.toml and the project are as they were")
    enable = systemd.enable_commands(user=user, name=name)
    typer.echo(f"to install it: copy it to {target}, then\n  {enable}")
    if db:
        typer.echo(f"its history will be {db}: `flowerd --db {db} runs` reads it")


def _dynamic(ctx: typer.Context, run_as: str | None) -> bool:
    from daemon.serve import systemd

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

"""`flowerd service print | install`: the systemd unit for this install."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.app import app, settings_of
from daemon.errors import FlowerdError

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
    typer.echo(f"enable and start it:\n  {systemd.enable_commands(user=user)}")
    db = systemd.database_hint(settings_of(ctx), user=user)
    if db:
        typer.echo(f"its history:\n  flowerd --base-dir {settings_of(ctx).base_dir} --db {db} runs")

"""`flowerd init [DIR]`: a working project to start from, never overwriting a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.app import app, settings_of
from daemon.errors import FlowerdError

PIPELINE = '''\
"""An example pipeline: Hamilton functions, each one a node named after it.

    flowerd run hello --input name=Ada
"""

from datetime import datetime


def greeting(name: str = "World") -> str:
    return f"Hello, {name}!"


def stamped(greeting: str, scheduled_at: datetime) -> str:
    """`scheduled_at`: the slot this run is for (flowerd passes it to nodes asking for it)."""
    return f"{greeting} (slot {scheduled_at.isoformat()})"
'''

SCHEDULE = """\
# Each [table] is one schedule; its key is the id. Every field: flowerd's README,
# "A schedule file". Check with `flowerd validate`; see fire times: `flowerd schedules`.

[hello_every_minute]
pipeline = "hello"                # pipelines/hello.py
cron = "* * * * *"                # every minute (or: interval = "1h", at = "2027-01-01T09:00")
final_vars = ["stamped"]
inputs = { name = "flowerd" }
# timezone = "Europe/Berlin"      # default: the `timezone` setting (UTC)
# max_retries = 2
# notify = ["mailto://me@example.com"]
"""

SETTINGS = """\
# flowerd's settings for this project; every one may be left out (the defaults are shown).
# Environment variables FLOWERD_<NAME> and command-line flags beat this file.

# timezone = "UTC"                # for schedules that name none
# database_url = ""               # default: .flowerd/history.db here; or postgresql+asyncpg://...
# http = "127.0.0.1:8787"         # the page, /metrics and the JSON API; "off" turns them off
# http_token = "a-long-secret"   # lets the page and the API trigger, pause and resume
# notify = []                     # default Apprise URLs for failures, e.g. "ntfy://ntfy.sh/topic"
# max_concurrent_runs = 16
# retention = "90d"               # prune finished runs older than this

# Values for every schedule that does not set the field itself (any schedule field but
# pipeline and its trigger). Tables come last in TOML: put plain settings above this.
[defaults]
async_driver = false              # the pipelines here are plain (sync) functions
"""

FILES = {
    "pipelines/hello.py": PIPELINE,
    "schedules/hello.toml": SCHEDULE,
    "flowerd.toml": SETTINGS,
    ".gitignore": ".flowerd/\n",
}


@app.command()
def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(help="Where to make the project (default: --base-dir, or here)."),
    ] = None,
) -> None:
    """Make a working project: pipelines/ with an example, schedules/ with a schedule for
    it, a commented flowerd.toml. An existing file is never overwritten (it is kept)."""
    base = (directory or settings_of(ctx).base_dir).expanduser().absolute()
    for relative, text in FILES.items():
        _write_new(base, relative, text)
    typer.echo(
        f"next:\n  cd {base}\n  flowerd validate\n  flowerd serve"
        "      # then `flowerd runs` in another shell; `flowerd service install` for systemd"
    )


def _write_new(base: Path, relative: str, text: str) -> None:
    path = base / relative
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as file:  # "x": never over an existing file
            file.write(text)
    except FileExistsError:
        typer.echo(f"kept    {relative} (it exists; not overwritten)")
        return
    except OSError as exc:
        raise FlowerdError(f"cannot write {path}: {exc.strerror or exc}") from None
    typer.echo(f"created {relative}")

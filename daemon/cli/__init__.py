"""The `flowerd` command: typer commands that read settings once and print tables or JSON.

History commands must start fast: nothing here imports Hamilton (or pandas) at module
level; only `run`, `validate` and `serve` import the pipeline layer, lazily.
Rooms: `app` (the typer app and global options), `serve`, `schedules`, `talk` (the
running daemon), `service`, `runs`, `db`, `backfill` (backfill, rerun), `common`, `render`.
"""

from __future__ import annotations

import sys

from daemon.cli import (  # noqa: F401 - registers the commands
    backfill,
    db,
    notify,
    runs,
    schedules,
    serve,
    service,
    talk,
)
from daemon.cli.app import app
from daemon.errors import FlowerdError


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


if __name__ == "__main__":
    main()

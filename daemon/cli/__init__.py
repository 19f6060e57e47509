"""The `flowerd` command: typer commands that read settings once and print tables or JSON.

History commands must start fast: nothing here imports Hamilton (or pandas) at module
level; only `run`, `validate` and `serve` import the pipeline layer, lazily.
Rooms: `app` (the typer app and global options), `serve`, `schedules`, `talk` (the
running daemon), `service`, `init`, `runs`, `db`, `backfill` (backfill, rerun), `common`, `render`.

`main()` imports only the room of the command it is given (ROOMS): typer builds every
registered command's parameters from its signature at each start, so registering all
of them cost every command ~10-20 ms. `--help`, `--version`, no command or a name it does
not know register every room (the full help, click's "No such command" and its hints).
"""

from __future__ import annotations

import importlib
import sys

from daemon.cli.app import app, unwrap_help
from daemon.errors import FlowerdError

# the first word after the global options -> the room that registers it
ROOMS = {
    "serve": "serve",
    "validate": "serve",
    "run": "serve",
    "schedules": "schedules",
    "runs": "runs",
    "stats": "runs",
    "trigger": "talk",
    "pause": "talk",
    "resume": "talk",
    "reload": "talk",
    "status": "talk",
    "stop": "talk",
    "audit": "audit",
    "backfill": "backfill",
    "rerun": "backfill",
    "db": "db",
    "notify": "notify",
    "service": "service",
    "init": "init",
}
# every room, in the order `flowerd --help` lists their commands
ALL_ROOMS = tuple(sorted(set(ROOMS.values())))
GLOBAL_VALUES = frozenset({"--base-dir", "--db", "--log-level", "--log-format"})


def command_of(args: list[str]) -> str | None:
    """The command `args` name after the global options; None for none or an option
    that is not a global one with a value (`--help`, `--version`, a typo)."""
    takes_value = False
    for arg in args:
        if takes_value:
            takes_value = False
        elif arg in GLOBAL_VALUES:
            takes_value = True
        elif arg.startswith("-"):
            name, given, _ = arg.partition("=")
            if not (given and name in GLOBAL_VALUES):  # --db=PATH is fine
                return None
        else:
            return arg
    return None


def register(command: str | None) -> None:
    """Import the room of `command` (every room when it is not one of ours)."""
    room = ROOMS.get(command or "")
    for name in (room,) if room else ALL_ROOMS:
        importlib.import_module(f"daemon.cli.{name}")


def main() -> None:
    """Console entry point. Typer handles usage errors (exit 2); our own errors print one
    message and exit with their code (1, 2 or 3) -- never a traceback."""
    try:
        register(command_of(sys.argv[1:]))
        unwrap_help(app)
        app()
    except FlowerdError as exc:
        print(f"flowerd: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

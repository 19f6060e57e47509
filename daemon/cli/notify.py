"""`flowerd notify test [SCHEDULE]`: does a notification reach its targets?"""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated

import typer

from daemon.cli.app import app, settings_of
from daemon.errors import FlowerdError, did_you_mean

notify_app = typer.Typer(help="Notifications (Apprise).", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    ctx: typer.Context,
    schedule: Annotated[
        str | None, typer.Argument(help="Its `notify` targets; default: the `notify` setting.")
    ] = None,
) -> None:
    """Send a test notification to a schedule's (or the default) targets; exit 1 if any
    failed. Targets are shown with their passwords and tokens masked."""
    from daemon.tell.delivery import Message, Sender

    settings = settings_of(ctx)
    targets, whose = _targets(settings, schedule)
    if not targets:
        raise FlowerdError(f"no notify targets for {whose}: set `notify` (Apprise URLs)")
    message = Message(
        title=f"flowerd: test notification for {whose}",
        body=f"A test from `flowerd notify test` on {socket.gethostname()}: {whose} "
        "will be told here.",
        failure=False,
        targets=tuple(targets),
        what="test",
    )
    failed = asyncio.run(_send(Sender(), message))
    if failed:
        raise typer.Exit(1)


async def _send(sender, message) -> int:  # noqa: ANN001
    try:
        results = await sender.send_now(message)
    finally:
        await sender.close()
    for target, why in results.items():
        if why is None:
            typer.echo(f"sent    {target}")
        else:
            typer.echo(f"failed  {target}: {why}", err=True)
    return sum(why is not None for why in results.values())


def _targets(settings, schedule_id: str | None) -> tuple[list[str], str]:  # noqa: ANN001
    if schedule_id is None:
        return list(settings.notify), "the default targets (setting `notify`)"
    from daemon.cli.common import project_schedules

    found = project_schedules(settings)
    schedules = {s.id: s for s in found}
    found = schedules.get(schedule_id)
    if found is None:
        raise FlowerdError(
            f"no schedule {schedule_id!r}{did_you_mean(schedule_id, schedules)}; "
            f"schedules: {', '.join(sorted(schedules)) or '(none)'}"
        )
    if found.notify is None:
        return list(settings.notify), f"schedule {schedule_id} (the `notify` setting)"
    return list(found.notify), f"schedule {schedule_id}"

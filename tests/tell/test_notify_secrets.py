"""A notify URL given as `env:NAME` is read by the process that sends, never by
`validate`, and never shown (issue 26, item 3)."""

from __future__ import annotations

from pathlib import Path

from tests.serve import cli, cli_here, make_project
from tests.tell.test_notifications import hook  # noqa: F401 - the fixture


def test_a_notify_url_from_the_environment(tmp_path: Path, hook):  # noqa: F811
    base = make_project(
        tmp_path,
        """
        [a]
        pipeline = "hello_world"
        cron = "* * * * *"
        notify = ["env:TEAM_HOOK_URL"]
        """,
    )
    checked = cli_here(base, "validate")  # the variable is not set here: validate reads none
    assert checked.returncode == 0, checked.stderr
    done = cli(base, "notify", "test", "a", env={"TEAM_HOOK_URL": hook.url})
    assert done.returncode == 0, done.stderr
    assert len(hook.received) == 1 and "test notification" in hook.received[0]["title"]
    assert hook.url.split("://")[1] not in done.stdout + done.stderr
    unset = cli(base, "notify", "test", "a")
    assert unset.returncode == 1 and "TEAM_HOOK_URL is not set" in unset.stderr
    assert "Traceback" not in unset.stderr

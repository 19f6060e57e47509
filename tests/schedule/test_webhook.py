"""`on_webhook = { secret = ... }` in schedule files: parsed, one trigger only, named problems."""

from __future__ import annotations

import pytest

from daemon.schedule import load_schedules
from tests.schedule.test_files import problems_of, write


def test_an_on_webhook_schedule_loads_with_its_reference_and_queues(tmp_path):
    write(
        tmp_path,
        "hooks.toml",
        """
        [deploy]
        pipeline = "hello_world"
        on_webhook = { secret = "env:DEPLOY_HOOK_SECRET" }

        [skipper]
        pipeline = "hello_world"
        overlap = "skip"
        on_webhook = { secret = "literal:env:this-is-the-secret" }
        """,
    )
    deploy, skipper = load_schedules(tmp_path)
    assert deploy.on_webhook.secret == "env:DEPLOY_HOOK_SECRET"  # the reference, not its value
    assert (deploy.trigger_kind, deploy.describe_trigger(), deploy.has_clock) == (
        "on_webhook",
        "on webhook POST /hooks/deploy",
        False,
    )
    assert deploy.overlap == "queue"  # the default for events
    assert skipper.overlap == "skip"  # as given
    assert skipper.on_webhook.secret == "literal:env:this-is-the-secret"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'cron = "* * * * *"\non_webhook = { secret = "env:S" }',
            "[s] fields 'cron' and 'on_webhook': give only one trigger (one of cron, interval, "
            "at, after, on_file, on_webhook; a schedule that should also run on a clock is a "
            "second schedule)",
        ),
        (
            'after = ["x"]\non_webhook = { secret = "env:S" }',
            "[s] fields 'after' and 'on_webhook': `after` runs the schedule when its upstreams "
            "succeed",
        ),
        ("on_webhook = {}", "[s] field 'on_webhook.secret' is required"),
        (
            'on_webhook = { secret = "env:S", token = "x" }',
            "[s] field 'on_webhook.token'",
        ),
        ('on_webhook = "env:S"', "[s] field 'on_webhook': expected a table, got \"env:S\""),
        ('on_webhook = { secret = 5 }', "[s] field 'on_webhook.secret': expected a string, got 5"),
        ('on_webhook = { secret = " " }', "[s] field 'on_webhook.secret': is empty"),
        (
            'on_webhook = { secret = "env:my-secret" }',
            "[s] field 'on_webhook.secret': 'env' reference is malformed",
        ),
        (
            'on_webhook = { secret = "file:relative/x" }',
            "[s] field 'on_webhook.secret': 'file' reference is malformed",
        ),
    ],
)
def test_on_webhook_problems_name_the_field(tmp_path, body, expected):
    write(tmp_path, "a.toml", f'[s]\npipeline = "hello_world"\n{body}\n')
    problems = problems_of(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].endswith("a.toml: " + expected) or expected in problems[0], problems


def test_on_webhook_is_no_project_default(tmp_path):
    from daemon.schedule.table import defaults_problems

    assert defaults_problems({"on_webhook": {"secret": "env:S"}}) == [
        "field 'on_webhook' is what makes a schedule; set it in each schedule"
    ]

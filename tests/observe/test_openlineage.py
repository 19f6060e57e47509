"""OpenLineage run events from a real `flowerd serve` to a real HTTP receiver: START then
COMPLETE (FAIL for a failing run), job = the schedule, and a `parent` facet whose run id
is derived from the schedule and slot."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.errors import SettingsError
from daemon.observe.openlineage import slot_run_id
from daemon.settings import load_settings
from tests.observe.lineage import LineageReceiver
from tests.serve import Served, make_project, rows_where, wait_for

SCHEDULES = """
[greet]
pipeline = "hello_world"
interval = 1
final_vars = ["full_greeting"]
misfire_grace = 30

[broken]
pipeline = "broken"
interval = 1
misfire_grace = 30
"""
BROKEN = """
def boom() -> int:
    raise ValueError("no luck")
"""


def _finished(lineage: LineageReceiver, job: str) -> list[dict]:
    events = lineage.of_job(job)
    ends = [e for e in events if e["eventType"] != "START"]
    return events if ends else []


def test_start_then_complete_or_fail_with_the_slot_as_parent(tmp_path):
    base = make_project(tmp_path, SCHEDULES, broken=BROKEN)
    with LineageReceiver() as lineage:
        (base / "flowerd.toml").write_text(
            f'http = "off"\n[openlineage]\nurl = "{lineage.url}"\nnamespace = "ops"\n'
        )
        with Served(base) as served:
            served.wait_ready()
            greet = wait_for(lambda: _finished(lineage, "greet"), what="greet's events")
            broken = wait_for(lambda: _finished(lineage, "broken"), what="broken's events")
            served.stop()

    first = greet[0]
    assert first["eventType"] == "START"
    assert (first["job"]["namespace"], first["job"]["name"]) == ("ops", "greet")
    same_run = [e for e in greet if e["run"]["runId"] == first["run"]["runId"]]
    assert [e["eventType"] for e in same_run][:2] == ["START", "COMPLETE"]

    row = next(r for r in rows_where(base, schedule="greet") if r.status == "success")
    parent = next(
        e for e in greet if e["eventType"] == "COMPLETE"
    )["run"]["facets"]["parent"]
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("ops", "greet")
    ended = {e["run"]["facets"]["parent"]["run"]["runId"] for e in greet}
    assert slot_run_id("greet", row.scheduled_at) in ended

    kinds = [e["eventType"] for e in broken if e["run"]["runId"] == broken[0]["run"]["runId"]]
    assert kinds[:2] == ["START", "FAIL"]
    fail = next(e for e in broken if e["eventType"] == "FAIL")
    assert "no luck" in fail["run"]["facets"]["errorMessage"]["message"]
    assert fail["run"]["facets"]["parent"]["job"]["name"] == "broken"


def test_the_same_slot_gives_the_same_parent():
    slot = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    assert slot_run_id("nightly", slot) == slot_run_id("nightly", slot)
    assert slot_run_id("nightly", slot) != slot_run_id("hourly", slot)
    assert slot_run_id("nightly", slot) != slot_run_id("nightly", slot.replace(hour=7))


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('[openlineage]\nnamespace = "x"\n', "needs url"),
        ('[openlineage]\nurl = "ftp://x"\n', "is not an http"),
        ('[openlineage]\nurl = "http://x"\nnamspace = "y"\n', "did you mean"),
    ],
)
def test_a_bad_section_says_what_is_wrong(tmp_path, section, says):
    (tmp_path / "flowerd.toml").write_text(section)
    with pytest.raises(SettingsError, match=says):
        load_settings(tmp_path)

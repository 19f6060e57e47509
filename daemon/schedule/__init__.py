"""Schedule files -> frozen `Schedule` records, with errors that name file, schedule and field.

Every `*.toml` in the schedules directory holds schedules; each top-level table is one
schedule, keyed by its id (`[a-z0-9_-]+`, unique across all files). `load_schedules`
reads them all and raises one `ScheduleError` listing *every* problem it found, one
line each: `schedules/etl.toml: [nightly] field 'cron': ...`.

Its rooms: `record` (the frozen, keyword-only `Schedule`), `fields` (one table's fields
as users write them: the pydantic model and each field's check), `table` (one table ->
a `Schedule` or its problem lines) and `files` (the directory: reading the files, and
what only the whole set shows). This package imports neither Hamilton nor APScheduler;
`from daemon.schedule import X` stays the way in for every name below.
"""

from __future__ import annotations

from daemon.durations import format_seconds
from daemon.inputs import SLOT_INPUTS, check_not_reserved
from daemon.schedule.cron import CronSpec, parse_cron
from daemon.schedule.fields import LOG_LEVELS, MIN_MEMORY_LIMIT, TABLE_FIELDS, known_zone
from daemon.schedule.files import (
    display_path,
    load_schedules,
    read_schedules,
    validate_schedule_dir,
)
from daemon.schedule.record import (
    CATCHUP_POLICIES,
    ISOLATIONS,
    OVERLAP_POLICIES,
    Catchup,
    Isolation,
    Overlap,
    Schedule,
)
from daemon.schedule.table import SCHEDULE_ID, TRIGGER_FIELDS

__all__ = [
    "CATCHUP_POLICIES",
    "ISOLATIONS",
    "LOG_LEVELS",
    "MIN_MEMORY_LIMIT",
    "OVERLAP_POLICIES",
    "SCHEDULE_ID",
    "SLOT_INPUTS",
    "TABLE_FIELDS",
    "TRIGGER_FIELDS",
    "Catchup",
    "CronSpec",
    "Isolation",
    "Overlap",
    "Schedule",
    "check_not_reserved",
    "display_path",
    "format_seconds",
    "known_zone",
    "load_schedules",
    "parse_cron",
    "read_schedules",
    "validate_schedule_dir",
]

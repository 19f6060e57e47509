"""Schedules checked end to end: `flowerd validate`, the start of `flowerd serve`, and
every reload.

Every schedule file is parsed, and every schedule that parsed has its pipeline built with
its own options, its inputs converted to the annotated types (daemon.inputs) and its
final vars and required inputs checked. Every problem of every phase is listed in one
`ScheduleError` -- a bad cron in one schedule does not hide another's unknown final var
-- each line naming the file, the schedule id and the field. Whatever a pipeline raises
while being checked becomes such a line, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from daemon.errors import FlowerdError, ScheduleError, did_you_mean
from daemon.incoming.webhooks import webhook_problems
from daemon.pipeline import InputCheck, Pipelines, RunConfig, cluster
from daemon.schedule import Schedule, read_schedules
from daemon.settings import Settings
from daemon.tell.delivery import url_problems


def load_and_validate(
    settings: Settings,
    pm: Pipelines,
    *,
    reach_clusters: bool = False,
    resolve_secrets: bool = True,
) -> tuple[list[Schedule], list[str]]:
    """Every schedule file parsed, and every schedule's pipeline built with its own
    options. Returns (schedules, warnings) -- the schedules' inputs converted to the
    types their pipelines annotate; raises ScheduleError listing every problem.
    `reach_clusters` (`flowerd validate`): also warn of a Dask cluster that cannot be
    reached now -- never a problem: reaching it is its runs' business.
    `resolve_secrets` (serve, not `flowerd validate`: a secret is read only by the process
    that uses it): each webhook secret must resolve here."""
    schedules, problems = read_schedules(
        settings.schedules_dir,
        default_timezone=settings.timezone,
        pipelines_dir=settings.pipelines_dir,
        default_isolation=settings.isolation,
        defaults=settings.defaults,
    )
    checked, warnings = [], {}
    checks = _Checks(pm)
    shown = _Shown(settings.base_dir)
    for schedule in schedules:
        where = f"{shown(schedule.file)}: [{schedule.id}]"
        try:
            schedule, found = checks.check(schedule)
        except Exception as exc:  # noqa: BLE001 - whatever a pipeline raises is one line
            problems.append(f"{where} {_describe(schedule, exc)}")
            continue
        checked.append(schedule)
        if reach_clusters:
            found = [*found, *_cluster_down(schedule)]
        found = [*found, *_past_at(schedule), *_unwatchable(schedule, settings.base_dir)]
        for warning in found:  # each said once, naming every schedule
            warnings.setdefault(warning, []).append(where)
        problems.extend(f"{where} field 'notify': {p}" for p in url_problems(schedule.notify))
    problems.extend(_pool_problems(checked, settings))
    problems.extend(webhook_problems(checked, http=settings.http, resolve=resolve_secrets))
    problems.extend(f"setting 'notify': {p}" for p in url_problems(settings.notify))
    if problems:
        raise ScheduleError(problems)
    return checked, [f"{'; '.join(wheres)} {w}" for w, wheres in warnings.items()]


def _past_at(schedule: Schedule) -> list[str]:
    if schedule.at is None or schedule.at > datetime.now(UTC):
        return []
    return [
        f"at = {schedule.at.isoformat()} is in the past: this one-shot schedule never "
        "fires again (catch-up runs only slots after the last one recorded)"
    ]


def _unwatchable(schedule: Schedule, base_dir: Path) -> list[str]:
    """An `on_file` directory that is not there (yet) is watched once it is: a warning."""
    if schedule.on_file is None:
        return []
    from daemon.incoming.wiring import directory_of

    directory = directory_of(schedule, base_dir)
    if directory.is_dir():
        return []
    what = "is not a directory" if directory.exists() else "does not exist (yet)"
    return [f"field 'on_file': {directory} {what}: files start runs once it is a directory there"]


def _cluster_down(schedule: Schedule) -> list[str]:
    executor = schedule.executor
    if not isinstance(executor, Mapping) or executor.get("type") != "dask":
        return []
    why = cluster.unreachable(str(executor.get("address") or ""))
    return [f"{why}; its runs fail until it can"] if why else []


# Schedules checked before, by the identity of the Schedule read (daemon.schedule hands
# back the very object for a table unchanged since): (it, its group's fingerprint, the
# schedule as checked, its warnings). A reload of 10,000 schedules whose pipeline is as it
# was checks the values of the changed ones only. The entry holds the schedule, so its id
# is not reused while it is here. A check that raised is not kept: it is checked again.
_CHECKED: dict[int, tuple[Schedule, tuple, Schedule, tuple[str, ...]]] = {}
MAX_CHECKED = 50_000


class _Checks:
    """Each schedule's pipeline checked: the DAG once per group of schedules that differ
    only in their triggers and input values (Pipelines.input_check), then each one's
    inputs converted to the annotated types and checked."""

    def __init__(self, pm: Pipelines):
        self.pm = pm
        # None: the group's check failed; else (its check, its fingerprint)
        self._by_shape: dict[tuple, tuple[InputCheck, tuple | None] | None] = {}

    def check(self, schedule: Schedule) -> tuple[Schedule, list[str]]:
        shape = _shape(schedule)
        if shape not in self._by_shape:
            self._by_shape[shape] = self._group(schedule)
        group = self._by_shape[shape]
        if group is None:  # whatever fails, each schedule says it as it would alone
            return _check(self.pm, schedule)
        check, fingerprint = group
        known = _CHECKED.get(id(schedule))
        if known is not None and known[0] is schedule and _same(known[1], fingerprint):
            return known[2], list(known[3])  # read and checked alike before: as then
        checked, warnings = self._values(schedule, check)
        if fingerprint is not None:
            if len(_CHECKED) >= MAX_CHECKED:
                _CHECKED.clear()
            _CHECKED[id(schedule)] = (schedule, fingerprint, checked, tuple(warnings))
        return checked, warnings

    def _group(self, schedule: Schedule) -> tuple[InputCheck, tuple | None] | None:
        try:
            cfg = RunConfig(**schedule.run_config_kwargs())
            check = self.pm.input_check(schedule.pipeline, cfg)
        except Exception:  # noqa: BLE001 - each schedule's own check says it
            return None
        try:
            return check, check.fingerprint()
        except Exception:  # noqa: BLE001 - not comparable: its schedules are checked anew
            return check, None

    @staticmethod
    def _values(schedule: Schedule, group: InputCheck) -> tuple[Schedule, list[str]]:
        raw = schedule.raw_inputs()
        inputs = group.typed(raw)
        group.check(inputs)
        if any(inputs[key] is not raw[key] for key in raw):  # as converted: the runs get
            schedule = dataclasses.replace(schedule, inputs=inputs)  # what was validated
        return schedule, list(group.warnings)


def _same(before: tuple | None, now: tuple | None) -> bool:
    """Equal fingerprints (a config value whose `==` cannot say -- an array -- is not)."""
    if before is None or now is None:
        return False
    try:
        return bool(before == now)
    except Exception:  # noqa: BLE001 - whatever a value's __eq__ raises: not the same
        return False


def _shape(schedule: Schedule) -> tuple:
    """What shapes a schedule's DAG walk: its driver and its input names, not their values."""
    return (schedule.driver_shape(), tuple(schedule.inputs))


def _check(pm: Pipelines, schedule: Schedule) -> tuple[Schedule, list[str]]:
    kwargs = schedule.run_config_kwargs()
    cfg = RunConfig(**kwargs)
    inputs = pm.typed_inputs(
        schedule.pipeline,
        kwargs["inputs"],
        async_driver=schedule.async_driver,
        run_config=cfg,
        strict=False,
    )
    if inputs:  # as converted: the runs get what was validated
        schedule = dataclasses.replace(schedule, inputs=inputs)
    warnings = pm.validate(schedule.pipeline, dataclasses.replace(cfg, inputs=inputs))
    return schedule, warnings


def _pool_problems(schedules: list[Schedule], settings: Settings) -> list[str]:
    """A pool a schedule names must be in the setting `pools` (its limit)."""
    known = sorted(settings.pools)
    return [
        f"{_display(s.file, settings.base_dir)}: [{s.id}] field 'pool': no pool {s.pool!r} in "
        f"the setting 'pools' (pools: {', '.join(known) or 'none'}; add e.g. "
        f"pools = {{ {s.pool} = 1 }} to flowerd.toml){did_you_mean(s.pool, known)}"
        for s in schedules
        if s.pool is not None and s.pool not in settings.pools
    ]


def _describe(schedule: Schedule, exc: BaseException) -> str:
    field = getattr(exc, "field", None) or "pipeline"
    message = str(exc) if isinstance(exc, FlowerdError) else f"{type(exc).__name__}: {exc}"
    return f"field {field!r}: pipeline {schedule.pipeline!r}: {message}"


def _display(path: Path, base: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(base))
    return str(path)


class _Shown:
    """Files as messages show them (relative to the base dir), each worked out once."""

    def __init__(self, base: Path):
        self.base = base
        self._shown: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        shown = self._shown.get(path)
        if shown is None:
            shown = self._shown[path] = _display(path, self.base)
        return shown


__all__ = ["load_and_validate"]

"""The schedules directory: every `*.toml` in it read, each table parsed
(daemon.schedule.table), and the problems only the whole set shows -- an id used twice,
an `after` naming no schedule or closing a cycle, a pipeline missing from pipelines/ --
all listed, one line each, prefixed with the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daemon.errors import ScheduleError, did_you_mean
from daemon.schedule import chunks
from daemon.schedule.graph import graph_problems
from daemon.schedule.record import Schedule
from daemon.schedule.table import Defaults, parse_table

try:  # tomllib's API; its compiled wheel reads 10,000 schedules in a third of the time
    import tomli as tomllib
except ImportError:  # pragma: no cover - a dependency; tomllib reads the same
    import tomllib


def load_schedules(
    directory: Path,
    *,
    default_timezone: str = "UTC",
    pipelines_dir: Path | None = None,
    default_isolation: str = "thread",
    defaults: Mapping[str, Any] | None = None,
) -> list[Schedule]:
    """Every schedule in `directory/*.toml` (files sorted by name, tables in file order).

    Raises `ScheduleError` listing every problem in every file. A missing directory
    holds no schedules. With `pipelines_dir`, each pipeline must be a module there.
    `default_timezone` and `default_isolation` apply where a schedule sets none, and
    before them `defaults` (flowerd.toml's [defaults]: any field a schedule leaves out)."""
    schedules, problems = read_schedules(
        directory,
        default_timezone=default_timezone,
        pipelines_dir=pipelines_dir,
        default_isolation=default_isolation,
        defaults=defaults,
    )
    if problems:
        raise ScheduleError(problems)
    return schedules


def read_schedules(
    directory: Path,
    *,
    default_timezone: str = "UTC",
    pipelines_dir: Path | None = None,
    default_isolation: str = "thread",
    defaults: Mapping[str, Any] | None = None,
) -> tuple[list[Schedule], list[str]]:
    """(the valid schedules, every problem): `flowerd validate` goes on to check the
    valid schedules' pipelines, so one run reports every problem of every phase."""
    directory = Path(directory)
    if not directory.is_dir():
        return [], []
    schedules: list[Schedule] = []
    problems: list[str] = []
    ids: list[tuple[str, Path]] = []
    fields = tuple((defaults or {}).items())
    given = Defaults(timezone=default_timezone, isolation=default_isolation, fields=fields)
    for path in sorted(directory.glob("*.toml")):
        found, file_problems, file_ids = _load_file(path, given)
        schedules += found
        problems += file_problems
        ids += [(schedule_id, path) for schedule_id in file_ids]
    problems += _duplicate_ids(ids)
    problems += graph_problems(schedules, known=[schedule_id for schedule_id, _ in ids])
    if pipelines_dir is not None:
        available = _pipelines_in(Path(pipelines_dir))
        problems += _missing_pipelines(schedules, Path(pipelines_dir), available)
        schedules = [s for s in schedules if s.pipeline in available]
    return schedules, problems


def validate_schedule_dir(
    directory: Path,
    *,
    default_timezone: str = "UTC",
    pipelines_dir: Path | None = None,
    default_isolation: str = "thread",
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every problem in the schedule files, as lines (empty: all valid)."""
    try:
        load_schedules(
            directory,
            default_timezone=default_timezone,
            pipelines_dir=pipelines_dir,
            default_isolation=default_isolation,
            defaults=defaults,
        )
    except ScheduleError as exc:
        return exc.problems
    return []


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # elsewhere; or a symlink loop
        return str(path)


_FileRead = tuple[list[Schedule], list[str], list[str]]  # (schedules, problems, table ids)

# Files read before: path -> (a digest of their bytes and of what else the reading
# depends on, what the reading gave). The bytes are read and digested every time -- no
# stat shortcut: an edit of the same size within one tick of the file clock keeps size
# and mtime, never its bytes -- and only a file whose digest changed is parsed again: a
# reload of 10,000 schedules in one file with one changed table reads 1.3 MB and parses
# nothing when the file is as it was, its tables (_PARSED) when it is not.
_FILES: dict[Path, tuple[bytes, str, _FileRead]] = {}
MAX_FILES = 10_000


def _load_file(path: Path, defaults: Defaults) -> _FileRead:
    """(valid schedules, problems, every table id) of one file."""
    where = display_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        _FILES.pop(path, None)
        return [], [f"{where}: cannot read: {exc}"], []
    digest = hashlib.blake2b(data, digest_size=32).digest()
    context = repr((where, defaults))  # repr, as _PARSED: `1` and `true` differ
    known = _FILES.get(path)
    if known is not None and known[0] == digest and known[1] == context:
        read = known[2]
    else:
        read = _read_file(path, where, data, defaults)
        if len(_FILES) >= MAX_FILES:
            _FILES.clear()
        _FILES[path] = (digest, context, read)
    return list(read[0]), list(read[1]), list(read[2])


def _read_file(path: Path, where: str, data: bytes, defaults: Defaults) -> _FileRead:
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text
        found = chunks.pieces(text)  # the tables read before are not parsed again
        document = tomllib.loads(text) if found is None else None
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line L, column C)"
        return [], [f"{where}: not valid TOML: {exc}"], []
    except UnicodeDecodeError as exc:
        return [], [f"{where}: cannot read: {exc}"], []
    given = repr(defaults)
    if found is not None:
        read = [
            (name, _parsed_piece(path, (name, piece, said, table), defaults, given))
            for name, piece, said, table in found
        ]
    else:
        read = [
            (name, _parsed_table(path, name, table, defaults, given))
            for name, table in (document or {}).items()
        ]
    schedules: list[Schedule] = []
    problems: list[str] = []
    for _, (schedule, table_problems) in read:
        problems += [f"{where}: {line}" for line in table_problems]
        if schedule is not None:
            schedules.append(schedule)
    return schedules, problems, [name for name, _ in read]


# Tables read before, by what they say (repr: `1` and `true` differ, as TOML says): a
# reload of 10,000 schedules with one changed parses one table again, not 10,000.
_PARSED: dict[tuple, tuple[Schedule | None, list[str]]] = {}
MAX_PARSED = 50_000


def _parsed_table(
    path: Path, schedule_id: str, table: object, defaults: Defaults, given: str
) -> tuple[Schedule | None, list[str]]:
    """`given`: repr(defaults), one string for the whole file."""
    said = hashlib.blake2b(repr(table).encode(), digest_size=16).digest()
    key = (path, schedule_id, said, given)  # a digest, not the text: 10,000 keys stay small
    return _parsed(key, lambda: table, defaults)


def _parsed_piece(
    path: Path, piece: chunks.Piece, defaults: Defaults, given: str
) -> tuple[Schedule | None, list[str]]:
    """A table read from its piece of the file (daemon.schedule.chunks), keyed by the
    piece's digest: an unchanged piece is neither parsed nor its table built again."""
    schedule_id, text, said, table = piece
    key = (path, schedule_id, b"piece:" + said, given)
    return _parsed(
        key, lambda: chunks.table(text, schedule_id) if table is None else table, defaults
    )


def _parsed(
    key: tuple, table: Callable[[], object], defaults: Defaults
) -> tuple[Schedule | None, list[str]]:
    found = _PARSED.get(key)
    if found is None:
        found = parse_table(key[0], key[1], table(), defaults)
        if len(_PARSED) >= MAX_PARSED:
            _PARSED.clear()
        _PARSED[key] = found
    return found[0], list(found[1])


def _duplicate_ids(ids: list[tuple[str, Path]]) -> list[str]:
    first_file: dict[str, Path] = {}
    problems = []
    for schedule_id, path in ids:
        earlier = first_file.setdefault(schedule_id, path)
        if earlier is not path:
            problems.append(
                f"{display_path(path)}: [{schedule_id}] duplicate schedule id; "
                f"{display_path(earlier)} already has [{schedule_id}] "
                "(ids are unique across all schedule files)"
            )
    return problems


def _pipelines_in(pipelines_dir: Path) -> frozenset[str]:
    return frozenset(p.stem for p in pipelines_dir.glob("*.py") if p.stem.isidentifier())


def _missing_pipelines(
    schedules: list[Schedule], pipelines_dir: Path, found: frozenset[str]
) -> list[str]:
    available = sorted(found)
    problems = []
    for schedule in schedules:
        if schedule.pipeline not in found:
            problems.append(
                f"{display_path(schedule.file)}: [{schedule.id}] field 'pipeline': pipeline "
                f"{schedule.pipeline!r} not found in {display_path(pipelines_dir)} "
                f"(pipelines there: {', '.join(available) or 'none'})"
                f"{did_you_mean(schedule.pipeline, available)}"
            )
    return problems

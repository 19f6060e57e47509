"""The runs list over HTTP is paged and bounded (daemon/http/listing.py): at most 1,000
rows newest first, `before=ID` for the page below, bad values 400/404 -- against a real
`flowerd serve` whose history holds 2,500 rows (written straight into its SQLite file)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.errors import RunNotFound, UsageError
from daemon.history import History
from tests import pg
from tests.contract import bound
from tests.http.test_server import fetch
from tests.serve import Served, make_project

pytestmark = pytest.mark.timeout(120)

ROWS = 2_500
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(db_path: Path, rows: int) -> None:
    """`rows` finished runs, two to a run_at (so the keyset's id tie-break is tried)."""
    columns = (
        "schedule pipeline trigger status run_at scheduled_at attempts async_driver "
        "final_vars inputs host pid"
    ).split()
    sql = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def row(i: int) -> tuple:
        at = (T0 + timedelta(seconds=i // 2)).strftime("%Y-%m-%d %H:%M:%S.%f")
        return (f"s{i % 2}", "hello_world", "manual", "success", at, at, 1, 1, "[]", "{}", "t", 1)

    conn = sqlite3.connect(db_path, timeout=bound(30))
    try:
        with conn:
            conn.executemany(sql, (row(i) for i in range(rows)))
    finally:
        conn.close()


def page(url: str) -> tuple[list[dict], str | None]:
    status, headers, body = fetch(url)
    assert status == 200, body
    link = headers.get("Link")
    return json.loads(body), link and re.fullmatch(r'<(.+)>; rel="next"', link).group(1)


def test_the_runs_list_is_paged_and_capped(tmp_path: Path):
    base = make_project(tmp_path)
    with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:
        url = served.wait_ready()["http"]
        fill(Path(served.settings.db_url.split(":///", 1)[1]), ROWS)
        ids = []
        first, after = page(f"{url}/api/runs?limit=0")
        assert len(first) == 1_000 and after is not None and "before=" in after
        for big in ("10000000", "9" * 30):
            assert [r["id"] for r in page(f"{url}/api/runs?limit={big}")[0]] == [
                r["id"] for r in first
            ]
        ids += [r["id"] for r in first]
        second, after = page(url + after)
        assert len(second) == 1_000 and after
        ids += [r["id"] for r in second]
        third, after = page(url + after)
        assert len(third) == ROWS - 2_000 and after is None
        ids += [r["id"] for r in third]
        # every row once, newest first (run_at, then id, descending)
        assert sorted(ids, reverse=True) == ids and len(set(ids)) == ROWS
        filtered, _ = page(f"{url}/api/runs?schedule=s1&limit=3&before={ids[0]}")
        assert [r["id"] for r in filtered] == [i for i in ids[1:] if i % 2 == 0][:3]
        _check_the_page(url, ids)
        _check_bad_values(url, ids)
        assert "Traceback" not in served.log
        assert served.stop() == 0


def _check_the_page(url: str, ids: list[int]) -> None:
    status, _, body = fetch(f"{url}/runs?limit=10000000")
    html = body.decode()
    assert status == 200
    assert len(re.findall(r'<td><a href="/runs/\d+">', html)) == 1_000
    older = re.search(r'<a href="(/runs\?[^"]+)">older runs', html).group(1)
    status, _, body = fetch(url + older.replace("&amp;", "&"))
    shown = [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">', body.decode())]
    assert status == 200 and shown == ids[1_000:2_000]


def _check_bad_values(url: str, ids: list[int]) -> None:
    for bad in ("limit=1e26", "limit=-1", "limit=%C2%B2", "before=x", "before=" + "9" * 20):
        status, _, body = fetch(f"{url}/api/runs?{bad}")
        assert status == 400 and json.loads(body)["error"], bad
        assert fetch(f"{url}/runs?{bad}")[0] == 200  # the page says what is wrong
    status, _, body = fetch(f"{url}/api/runs?before={max(ids) + 10}")
    assert status == 404 and json.loads(body)["error"]
    for long_id in ("9" * 19, "9" * 25, "9" * 5_000):
        for path in ("/api/runs/", "/runs/"):
            assert fetch(f"{url}{path}{long_id}")[0] == 404, (path, len(long_id))
    assert fetch(f"{url}/api/runs/{'9' * 19}/logs")[0] == 404


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pg.needs_postgres)])
def any_db(request) -> str:
    return request.getfixturevalue("db_url" if request.param == "sqlite" else "pg_url")


pg_url = pg.pg_url  # a fresh database per test


async def test_before_pages_through_ties_on_every_database(any_db: str):
    """list_runs(before=ID) is a keyset on (run_at, id): slots that share a run_at
    (two schedules) are neither lost nor repeated from page to page."""
    async with History.open(any_db, instance_id="i-1") as history:
        for i in range(30):
            await history.claim(
                pipeline="p",
                trigger="schedule",
                schedule=f"s{i % 3}",
                scheduled_at=T0 + timedelta(minutes=i // 3),
                async_driver=True,
            )
        everything = [r.id for r in await history.list_runs(limit=0)]
        paged, before = [], None
        while chunk := await history.list_runs(limit=4, before=before):
            paged += [r.id for r in chunk]
            before = chunk[-1].id
        assert paged == everything and len(paged) == 30
        with pytest.raises(RunNotFound):
            await history.get_run(2**64)
        with pytest.raises(UsageError):
            await history.list_runs(before=2**64)

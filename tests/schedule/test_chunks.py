"""A schedule file parsed table by table (daemon.schedule.chunks): the same document
as tomli's whole parse whatever the text, and never an edit missed by a reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import ScheduleError
from daemon.schedule import chunks, load_schedules

try:
    import tomli as tomllib
except ImportError:  # pragma: no cover
    import tomllib

TEXTS = {
    "plain": '[a]\nx = 1\n\n[b]  # note\ny = "[c]"\n',
    "preamble comments": "# schedules\n\n[a]\nx = 1\n[b]\nx = 2\n",
    "a header in a multi-line string": '[a]\ns = """\n[b]\nx = 1\n"""\n[c]\nx = 2\n',
    "a header in a literal string": "[a]\ns = '''\n[b]\n'''\n",
    "an array spanning lines": "[a]\nx = [\n[1],\n[2]\n]\n[b]\ny = 1\n",
    "sub-tables in their own piece": "[a]\nx = 1\n[a.sub]\ny = 2\n[b]\nz = 3\n",
    "an array of tables": "[a]\nx = 1\n[[a.steps]]\nn = 1\n[[a.steps]]\nn = 2\n",
    "indented headers": "  [a]\n  x = 1\n\t[b]\n\ty = 2\n",
}
BAD = {
    "a table defined twice": "[a]\nx = 1\n[b]\ny = 1\n[a]\nz = 1\n",
    "a sub-table of an earlier piece": "[a]\nx = 1\n[b]\ny = 1\n[a.more]\nz = 1\n",
    "a key before the first table": "x = 1\n[a]\ny = 1\n",
    "an unterminated string": '[a]\ns = """\n[b]\nx = 1\n',
    "a dotted key into another table": "[a]\nx = 1\n[b]\na.y = 1\n",
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_the_pieces_read_as_the_whole_text_reads(text: str):
    assert chunks.loads(text) == tomllib.loads(text)
    assert chunks.loads(text) == tomllib.loads(text)  # again, from the pieces kept


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_what_the_whole_text_refuses_is_refused_with_the_whole_texts_message(text: str):
    try:
        expected = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        with pytest.raises(tomllib.TOMLDecodeError) as caught:
            chunks.loads(text)
        assert str(caught.value) == str(exc)  # its line is the file's
    else:
        assert chunks.loads(text) == expected


def _table(i: int, name: str) -> str:
    return f'[s{i:03d}]\npipeline = "p"\ncron = "0 1 * * *"\ninputs = {{ name = "{name}" }}\n'


def test_an_edit_with_the_same_size_and_mtime_is_seen(tmp_path: Path):
    """A reload reads the bytes every time: an edit in the same tick of the file clock,
    of the same size, with the mtime put back, still changes what is read."""
    path = tmp_path / "many.toml"
    path.write_text("\n".join(_table(i, "aaaa") for i in range(50)))
    stat = os.stat(path)
    first = {s.id: s.inputs["name"] for s in load_schedules(tmp_path)}
    path.write_text("\n".join(_table(i, "bbbb" if i == 7 else "aaaa") for i in range(50)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    second = {s.id: s.inputs["name"] for s in load_schedules(tmp_path)}
    assert first["s007"] == "aaaa" and second["s007"] == "bbbb"
    assert {k: v for k, v in second.items() if k != "s007"} == {
        k: v for k, v in first.items() if k != "s007"
    }


def test_a_file_made_bad_and_good_again_is_read_each_time(tmp_path: Path):
    path = tmp_path / "many.toml"
    good = "\n".join(_table(i, "x") for i in range(5))
    path.write_text(good)
    assert len(load_schedules(tmp_path)) == 5
    path.write_text(good.replace('cron = "0 1 * * *"', 'cron = "0 25 * * *"', 1))
    with pytest.raises(ScheduleError) as caught:
        load_schedules(tmp_path)
    assert caught.value.problems[0].startswith(f"{path}: [s000] field 'cron'")
    path.write_text(good + "[s001]\nx = 1\n")
    with pytest.raises(ScheduleError) as caught:
        load_schedules(tmp_path)
    assert "not valid TOML" in caught.value.problems[0] and "line 25" in caught.value.problems[0]
    path.write_text(good)
    assert len(load_schedules(tmp_path)) == 5

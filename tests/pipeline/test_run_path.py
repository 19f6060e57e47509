"""The per-run path of pm.run / pm.run_async kept short (a plan made once per pipeline
generation, no retry wrapper for a run that has neither retries nor callbacks, RunConfig
filled at once) without changing what a run does: edits, additional modules reloaded,
retries, callbacks and the RunConfig record behave as before."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import sys
from pathlib import Path

import pytest

from daemon import PipelineManager, RunConfig
from daemon.pipeline.runconfig import ExecutorConfig

REPO = Path(__file__).resolve().parent.parent.parent

FLAKY = """
calls = []


def value(x: int = 1) -> int:
    calls.append(x)
    if len(calls) % 2:
        raise ConnectionError("first try fails")
    return x * 10
"""


@pytest.fixture
def pm(tmp_path: Path) -> PipelineManager:
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "flaky.py").write_text(FLAKY)
    return PipelineManager(tmp_path)


def test_a_runconfig_is_the_same_record_however_it_is_made():
    made = RunConfig(inputs={"a": 1}, final_vars=["x"], max_retries=2)
    assert made == dataclasses.replace(
        RunConfig(), inputs={"a": 1}, final_vars=["x"], max_retries=2
    )
    assert made.retry_delay == 1.0 and made.async_driver is None  # defaults filled
    assert pickle.loads(pickle.dumps(made)) == made
    assert hash(ExecutorConfig(type="threadpool")) == hash(ExecutorConfig(type="threadpool"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.inputs = {}  # type: ignore[misc]
    with pytest.raises(TypeError, match="did you mean 'final_vars'"):
        RunConfig(final_var=["x"])
    with pytest.raises(ValueError, match="cannot be negative"):
        RunConfig(retry_delay=-1)


def test_plain_runs_see_an_edit_and_a_reloaded_additional_module(
    pm: PipelineManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert pm.run("hello_world", final_vars=["full_greeting"]) == {"full_greeting": "Hello, World!"}
    source = tmp_path / "pipelines" / "hello_world.py"
    source.write_text(source.read_text().replace('"Hello"', '"Hi"'))
    assert pm.run("hello_world", final_vars=["full_greeting"]) == {"full_greeting": "Hi, World!"}

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "salutations_ext.py").write_text('def salutation() -> str:\n    return "Yo"\n')
    monkeypatch.syspath_prepend(str(outside))
    monkeypatch.delitem(sys.modules, "salutations_ext", raising=False)
    cfg = {"final_vars": ["full_greeting"], "additional_modules": ["salutations_ext"]}
    assert pm.run("hello_world", **cfg) == {"full_greeting": "Yo, World!"}
    (outside / "salutations_ext.py").write_text('def salutation() -> str:\n    return "Ho"\n')
    assert pm.run("hello_world", **cfg, reload=True) == {"full_greeting": "Ho, World!"}
    assert pm.run("hello_world", **cfg) == {"full_greeting": "Ho, World!"}


def test_retries_and_callbacks_still_wrap_the_run(pm: PipelineManager):
    seen = []
    result = pm.run(
        "flaky", final_vars=["value"], max_retries=1, retry_delay=0, on_success=seen.append
    )  # the first attempt fails, the second succeeds
    assert result == {"value": 10} and seen == [{"value": 10}]
    with pytest.raises(ConnectionError):
        pm.run("flaky", final_vars=["value"], on_failure=seen.append)
    assert type(seen[-1]).__name__ == "ConnectionError"


async def test_async_runs_take_the_same_path(pm: PipelineManager):
    assert await pm.run_async("hello_world", final_vars=["full_greeting"]) == {
        "full_greeting": "Hello, World!"
    }
    assert await pm.run_async("flaky", final_vars=["value"], max_retries=1, retry_delay=0) == {
        "value": 10
    }

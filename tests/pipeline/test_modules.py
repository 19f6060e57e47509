"""Hamilton projects brought unchanged: real modules in tmp_path projects, each run raw
(as the user's own script would: its directory first on sys.path, Hamilton's Builder)
and through flowerd, in the same test, with the results compared."""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hamilton import driver

from daemon import PipelineManager
from daemon.errors import AsyncDriverUnsupported, PipelineError, UnknownFinalVar
from tests.contract import bound

PARALLEL = """
from hamilton.htypes import Collect, Parallelizable

import helpers


def item(n: int) -> Parallelizable[int]:
    for i in range(1, n + 1):
        yield i


def squared(item: int) -> int:
    return helpers.square(item)


def final(squared: Collect[int]) -> int:
    return sum(squared)
"""


def project(root: Path, files: dict[str, str] | None = None, **modules: str) -> Path:
    """A base dir whose pipelines/ holds `modules` (name -> source) and `files`
    (relative path -> source)."""
    for name, source in {**(files or {}), **{f"{m}.py": s for m, s in modules.items()}}.items():
        path = root / "pipelines" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def edit(path: Path, source: str) -> None:
    """Write and make the mtime visibly newer (coarse filesystem clocks)."""
    path.write_text(textwrap.dedent(source))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _under(module, directory: Path) -> bool:
    return str(getattr(module, "__file__", None) or "").startswith(str(directory))


@contextlib.contextmanager
def as_a_script(directory: Path):
    """sys.path as `python run.py` in `directory` has it (a fresh process: no module of
    that name imported yet); its modules forgotten after."""
    names = {p.stem for p in directory.iterdir()}
    for name in [n for n, m in sys.modules.items() if _under(m, directory) or n in names]:
        del sys.modules[name]
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))
        for name in [n for n, m in sys.modules.items() if _under(m, directory)]:
            del sys.modules[name]


def raw(base: Path, modules, final_vars, *, inputs=None, config=None, dynamic=False, remote=None):
    """What raw Hamilton returns for the project (and its driver's module tags)."""
    with as_a_script(base / "pipelines"):
        loaded = [importlib.import_module(m) for m in modules]
        builder = driver.Builder().with_modules(*loaded).with_config(config or {})
        if len(loaded) > 1:
            builder = builder.allow_module_overrides()
        if dynamic:
            builder = builder.enable_dynamic_execution(allow_experimental_mode=True)
        if remote is not None:
            builder = builder.with_remote_executor(remote)
        dr = builder.build()
        result = dr.execute(final_vars, inputs=inputs or {})
        return result, {n.name: n.tags.get("module") for n in dr.list_available_variables()}


@pytest.fixture(autouse=True)
def _forget_project_modules(tmp_path: Path):
    yield
    for name in [n for n, m in sys.modules.items() if _under(m, tmp_path)]:
        del sys.modules[name]


def _tags(pm: PipelineManager) -> dict[str, str | None]:
    (built, *_) = pm._drivers.built.values()
    return {v.name: v.tags.get("module") for v in built.driver.list_available_variables()}


# -- imports ----------------------------------------------------------------------------


async def test_sibling_imports_and_module_tags(tmp_path: Path):
    base = project(
        tmp_path,
        list_data="""
        from dataclasses import dataclass

        @dataclass
        class CityData:
            name: str
            population: int

        CITIES = [CityData("Ulm", 120), CityData("Bonn", 330)]
        """,
        helpers="def scale(value: int, factor: int) -> int:\n    return value * factor\n",
        cities="""
        import helpers
        from list_data import CITIES, CityData

        def cities() -> list[CityData]:
            return CITIES

        def population(cities: list[CityData], factor: int) -> int:
            return helpers.scale(sum(c.population for c in cities), factor)
        """,
    )
    expected, raw_tags = raw(base, ["cities"], ["population"], inputs={"factor": 2})
    pm = PipelineManager(base)
    assert pm.run("cities", final_vars=["population"], inputs={"factor": 2}) == expected
    assert await pm.run_async("cities", final_vars=["population"], inputs={"factor": 2}) == (
        expected
    )
    assert expected == {"population": 900}
    assert _tags(pm) == raw_tags and raw_tags["population"] == "cities"


async def test_packaged_and_relative_imports(tmp_path: Path):
    base = project(
        tmp_path,
        {
            "shop/__init__.py": "",
            "shop/rates.py": "VAT = 0.25\n",
            "shop/prices.py": """
            from . import rates
            from .rates import VAT

            def gross(net: float) -> float:
                return net * (1 + rates.VAT) + 0 * VAT
            """,
        },
        orders="def net(amount: float) -> float:\n    return amount\n",
    )
    expected, raw_tags = raw(base, ["orders", "shop.prices"], ["gross"], inputs={"amount": 8.0})
    pm = PipelineManager(base)
    kwargs = {"additional_modules": ["shop.prices"], "inputs": {"amount": 8.0}}
    assert pm.run("orders", final_vars=["gross"], **kwargs) == expected == {"gross": 10.0}
    assert await pm.run_async("orders", final_vars=["gross"], **kwargs) == expected
    assert _tags(pm)["gross"] == raw_tags["gross"] == "shop.prices"


def test_a_packaged_module_on_sys_path(tmp_path: Path, monkeypatch):
    base = project(tmp_path, main="def base_value() -> int:\n    return 4\n")
    site = tmp_path / "site"
    (site / "extpkg").mkdir(parents=True)
    (site / "extpkg" / "__init__.py").write_text("")
    (site / "extpkg" / "nodes.py").write_text(
        "def doubled(base_value: int) -> int:\n    return 2 * base_value\n"
    )
    monkeypatch.syspath_prepend(str(site))
    expected, _ = raw(base, ["main", "extpkg.nodes"], ["doubled"])
    pm = PipelineManager(base)
    assert pm.run("main", additional_modules=["extpkg.nodes"], final_vars=["doubled"]) == (expected)
    assert expected == {"doubled": 8}
    with pytest.raises(PipelineError, match="no pipeline 'extpkg.nowhere'"):
        pm.run("main", additional_modules=["extpkg.nowhere"])


def test_a_top_level_module_may_import_relatively(tmp_path: Path):
    base = project(
        tmp_path,
        helper="VALUE = 7\n",
        rel="from . import helper\n\ndef value() -> int:\n    return helper.VALUE\n",
    )
    assert PipelineManager(base).run("rel") == {"value": 7}


async def test_an_edited_helper_is_picked_up_by_every_pipeline(tmp_path: Path):
    base = project(
        tmp_path,
        helper="FACTOR = 2\n",
        calc="import helper\n\ndef out(x: int) -> int:\n    return x * helper.FACTOR\n",
        other="from helper import FACTOR\n\ndef other(x: int) -> int:\n    return x + FACTOR\n",
    )
    pm = PipelineManager(base)
    assert pm.run("calc", inputs={"x": 3}) == raw(base, ["calc"], ["out"], inputs={"x": 3})[0]
    assert pm.run("other", inputs={"x": 3}) == {"other": 5}
    edit(base / "pipelines" / "helper.py", "FACTOR = 5\n")
    expected, _ = raw(base, ["calc"], ["out"], inputs={"x": 3})
    assert pm.run("calc", inputs={"x": 3}) == expected == {"out": 15}  # no reload needed
    assert await pm.run_async("calc", inputs={"x": 3}) == expected
    assert pm.run("other", inputs={"x": 3}) == raw(base, ["other"], ["other"], inputs={"x": 3})[0]
    edit(base / "pipelines" / "helper.py", "FACTOR = 6\n")
    assert pm.run("calc", inputs={"x": 3}, reload=True) == {"out": 18}


async def test_two_base_dirs_never_share_a_module(tmp_path: Path):
    bases = []
    for number in (1, 2):
        bases.append(
            project(
                tmp_path / f"project{number}",
                helper=f"VALUE = {number}\n",
                sib=f"K = {number * 10}\n",
                p="""
                import sib
                from . import helper

                def out() -> int:
                    return helper.VALUE + sib.K
                """,
                q="import sib\n\ndef k() -> int:\n    return sib.K\n",
            )
        )
    pms = [PipelineManager(base) for base in bases]
    for _ in range(2):  # and again, after the other one loaded its own
        assert [pm.run("p") for pm in pms] == [{"out": 11}, {"out": 22}]
        assert [await pm.run_async("q") for pm in pms] == [raw(b, ["q"], ["k"])[0] for b in bases]
    assert [pm.run("q") for pm in pms] == [{"k": 10}, {"k": 20}]


def test_a_module_shadowing_an_importable_one_is_refused(tmp_path: Path):
    assert "tabnanny" not in sys.modules  # a stdlib module nothing here imports
    base = project(
        tmp_path,
        tabnanny="X = 1\n",
        uses="import tabnanny\n\ndef x() -> int:\n    return tabnanny.X\n",
    )
    with pytest.raises(PipelineError, match=r"tabnanny.py would shadow the module 'tabnanny'"):
        PipelineManager(base).run("uses")
    with pytest.raises(PipelineError, match=r"shadow the module 'tabnanny' \(/"):
        PipelineManager(base).run("tabnanny")


# -- Parallelizable ---------------------------------------------------------------------


async def test_parallelizable_runs_with_no_executor_as_hamilton_does(tmp_path: Path):
    base = project(tmp_path, helpers="def square(x: int) -> int:\n    return x * x\n", par=PARALLEL)
    expected, _ = raw(base, ["par"], ["final"], inputs={"n": 4}, dynamic=True)
    pm = PipelineManager(base)
    assert pm.run("par", inputs={"n": 4}) == expected == {"final": 30}
    assert pm.run("par", inputs={"n": 4}, executor="synchronous") == expected
    assert pm.validate("par", inputs={"n": 4}, async_driver=False) == []
    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda: results.append(pm.run("par", inputs={"n": 4})))
        for _ in range(3)
    ]  # a dynamic driver cannot be shared: each run has its own
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=bound(30))
    assert results == [expected] * 3
    with pytest.raises(AsyncDriverUnsupported, match="async_driver = false"):
        await pm.run_async("par", inputs={"n": 4})


def test_multiprocessing_executor_under_spawn(tmp_path: Path):
    from hamilton.execution import executors

    base = project(tmp_path, helpers="def square(x: int) -> int:\n    return x * x\n", par=PARALLEL)
    method = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        remote = executors.MultiProcessingExecutor(max_tasks=2)
        expected, _ = raw(base, ["par"], ["final"], inputs={"n": 3}, dynamic=True, remote=remote)
        result = PipelineManager(base).run(
            "par", inputs={"n": 3}, executor={"type": "multiprocessing", "max_workers": 2}
        )
    finally:
        multiprocessing.set_start_method(method, force=True)
    assert result == expected == {"final": 14}


# -- config and final_vars -------------------------------------------------------------


def test_configs_whose_dataframes_repr_alike_give_their_own_results(tmp_path: Path):
    import pandas as pd

    base = project(
        tmp_path,
        frames="""
        import pandas as pd

        def total(frame: pd.DataFrame) -> int:
            return int(frame["v"].sum())
        """,
    )
    first = pd.DataFrame({"v": range(200)})
    second = first.copy()
    second.loc[100, "v"] = -1000
    assert repr(first) == repr(second)  # pandas elides the rows that differ
    pm = PipelineManager(base)
    for frame in (first, second, first):
        expected, _ = raw(base, ["frames"], ["total"], config={"frame": frame})
        assert pm.run("frames", config={"frame": frame}) == expected
    assert pm.run("frames", config={"frame": first}) != pm.run("frames", config={"frame": second})
    assert len(pm._drivers.built) == 2  # one driver per distinct config, reused


class Opaque:
    def __init__(self, value: int):
        self.value = value

    def __repr__(self) -> str:
        return "Opaque(...)"


async def test_a_config_with_no_exact_key_is_never_shared(tmp_path: Path):
    base = project(tmp_path, opaque="def value(thing: object) -> int:\n    return thing.value\n")
    pm = PipelineManager(base)
    for number in (1, 2, 1):
        cfg = {"thing": Opaque(number)}
        expected, _ = raw(base, ["opaque"], ["value"], config=cfg)
        assert pm.run("opaque", config=cfg) == expected == {"value": number}
        assert await pm.run_async("opaque", config=cfg) == expected
    assert pm._drivers.built == {}


def test_configs_with_tuple_and_mixed_type_keys(tmp_path: Path):
    base = project(
        tmp_path,
        weighted="""
        from hamilton.function_modifiers import config

        @config.when(mode="sum")
        def score__sum(weights: dict) -> float:
            return sum(weights.values())

        @config.when(mode="count")
        def score__count(weights: dict) -> float:
            return float(len(weights))
        """,
    )
    pm = PipelineManager(base)
    for cfg in (
        {"mode": "sum", "weights": {(1, "a"): 2.0, "b": 3.0}},
        {"mode": "count", "weights": {(1, "a"): 2.0, "b": 3.0}},
        {"mode": "sum", "weights": {(1, "a"): 2.0, 2: 5.0}},
        {"mode": "sum", "weights": {(1, "a"): 2.0, True: 5.0}},
        {"mode": "sum", "weights": {(1, "a"): 2.0, 1.0: 5.5}},
    ):
        assert pm.run("weighted", config=cfg) == raw(base, ["weighted"], ["score"], config=cfg)[0]


async def test_function_objects_as_final_vars(tmp_path: Path):
    base = project(
        tmp_path,
        calc="def base(x: int) -> int:\n    return x + 1\n\ndef out(base: int) -> int:\n"
        "    return base * 2\n",
        elsewhere="def out() -> int:\n    return 0\n",
    )
    with as_a_script(base / "pipelines"):  # the user imports their module, as with Hamilton
        calc = importlib.import_module("calc")
        elsewhere = importlib.import_module("elsewhere")
    expected, _ = raw(base, ["calc"], [calc.out, calc.base], inputs={"x": 1})
    pm = PipelineManager(base)
    assert pm.run("calc", final_vars=[calc.out, calc.base], inputs={"x": 1}) == expected
    assert await pm.run_async("calc", final_vars=[calc.out], inputs={"x": 1}) == {"out": 4}
    with pytest.raises(UnknownFinalVar, match="elsewhere.out is a function not in a module"):
        pm.run("calc", final_vars=[elsewhere.out], inputs={"x": 1})


async def test_adapters_that_change_node_execution_are_refused_under_async(tmp_path: Path):
    from hamilton.lifecycle import NodeExecutionMethod

    class Doubling(NodeExecutionMethod):  # like the Narwhals adapter: wraps each node call
        def run_to_execute_node(self, *, node_callable, node_kwargs, **kwargs):
            return 2 * node_callable(**node_kwargs)

    base = project(tmp_path, one="def one() -> int:\n    return 1\n")
    with as_a_script(base / "pipelines"):
        module = importlib.import_module("one")
        dr = driver.Builder().with_modules(module).with_adapters(Doubling()).build()
        expected = dr.execute(["one"])
    pm = PipelineManager(base)
    assert pm.run("one", adapter=[Doubling()]) == expected == {"one": 2}
    with pytest.raises(AsyncDriverUnsupported, match="do_node_execute"):
        await pm.run_async("one", adapter=[Doubling()])

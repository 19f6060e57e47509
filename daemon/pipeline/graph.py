"""What a built driver's DAG holds, for validation and description: its nodes, inputs,
sinks and Parallelizable blocks, and the final_vars a run asks of it.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
Names with a leading underscore are private to that package.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon.errors import AsyncDriverUnsupported, UnknownFinalVar, did_you_mean
from daemon.inputs import SLOT_INPUTS
from daemon.pipeline.core import hamilton_common, hamilton_node
from daemon.pipeline.plans import _Plan
from daemon.pipeline.runconfig import RunConfig


@dataclass(frozen=True, kw_only=True)
class _Built:
    driver: Any
    variables: frozenset[str]
    sinks: tuple[str, ...]
    dynamic: bool = False  # Parallelizable/Collect: runs need dynamic execution


def _final_vars(plan: _Plan, built: _Built, cfg: RunConfig) -> list[str]:
    """Node names; a function object (Hamilton accepts them) names its node, if it
    comes from one of the run's modules -- Hamilton's own rule and message."""
    modules = {m.__name__ for m in plan.modules}
    final_vars = []
    for var in cfg.final_vars or built.sinks:
        name, error = hamilton_common.convert_output_value(var, modules)
        if error is not None:
            raise UnknownFinalVar(f"pipeline {plan.name!r}: {error}")
        if name not in built.variables:
            raise UnknownFinalVar(
                f"pipeline {plan.name!r} has no node {name!r}"
                f"{did_you_mean(name, built.variables)}; final_vars must name nodes of "
                f"the DAG (it has: {', '.join(sorted(built.variables)[:20])})"
            )
        final_vars.append(name)
    return final_vars


def _nodes(driver) -> list:
    """The DAG's named nodes. A config key Hamilton accepts that is not a string (a
    tuple, an int) becomes a node too, keyed by it, whose `.name` raises: such a node
    is no function, input or final var anyone can name, so it is left out."""
    return [node for key, node in driver.graph.nodes.items() if isinstance(key, str)]


def _is_function(node) -> bool:
    """A node computed by a function (not an input the caller supplies)."""
    return not node.user_defined and node.originating_functions is not None


def _is_async(node) -> bool:
    functions = (node.callable, *node.originating_functions) if _is_function(node) else ()
    return any(inspect.iscoroutinefunction(fn) for fn in functions)


def _inputs_of(built: _Built) -> set[str]:
    return {n.name for n in _nodes(built.driver) if n.user_defined}


def _slot_placeholders(built: _Built) -> dict[str, Any]:
    """Stand-ins for the slot inputs (SLOT_INPUTS) a DAG declares, so validation does not
    call them missing: the runner passes the real values."""
    stand_ins = {"scheduled_at": datetime.now(UTC), "run_id": 0, "trigger_path": "", "payload": {}}
    declared = _inputs_of(built)  # once: a walk of every node
    return {name: stand_ins[name] for name in SLOT_INPUTS if name in declared}


def _describe(driver) -> _Built:
    nodes = _nodes(driver)
    depended = {dep.name for n in nodes for dep in n.dependencies}
    sinks = tuple(n.name for n in nodes if _is_function(n) and n.name not in depended)
    variables = frozenset(n.name for n in nodes)
    return _Built(driver=driver, variables=variables, sinks=sinks)


def _parallel_nodes(built: _Built) -> list[str]:
    roles = {hamilton_node.NodeType.EXPAND, hamilton_node.NodeType.COLLECT}
    return [n.name for n in _nodes(built.driver) if n.node_role in roles]


def _has_parallelizable(built: _Built) -> bool:
    return bool(_parallel_nodes(built))


def _refuse_parallelizable(plan: _Plan, built: _Built) -> None:
    dynamic = _parallel_nodes(built)
    if dynamic:
        raise AsyncDriverUnsupported(
            f"pipeline {plan.name!r} uses Parallelizable/Collect ({', '.join(dynamic[:5])}), "
            "which needs Hamilton's dynamic execution; hamilton.async_driver cannot run it. "
            "Set async_driver = false (`flowerd run --sync`, pm.run(...)): flowerd then runs "
            "it with dynamic execution, as Hamilton does",
            field="async_driver",
        )

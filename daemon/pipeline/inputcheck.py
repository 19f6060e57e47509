"""`InputCheck`: what validation checks of a run's inputs once the DAG is checked.

Hamilton's `validate_execution` walks the DAG for the final vars (which depends on the
input *names*, never their values), asks the executor whether it can run those nodes, and
then checks each input value against its node's type (a `Literal` needs the value). The
first two are the same for every run of one plan, final vars and input names -- 10,000
schedules of one pipeline that differ in an input value -- so Pipelines.input_check does
them once and hands back this, which does the last part per run: the values converted to
the declared types (daemon.inputs) and checked as Hamilton's `validate_inputs` does.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon import secrets
from daemon.errors import PipelineError, did_you_mean
from daemon.inputs import convert_input
from daemon.pipeline.core import hamilton_driver


@dataclass(frozen=True, kw_only=True, slots=True)
class InputCheck:
    """The checked DAG of one (plan, final vars, input names): checks one run's values."""

    name: str  # the pipeline, for messages
    declared: Mapping[str, Any]  # node name -> its type
    placeholders: Mapping[str, Any]  # stand-ins for the slot inputs the DAG declares
    driver: Any
    nodes: frozenset
    user_nodes: frozenset
    warnings: tuple[str, ...]
    executor_error: str | None = None  # the executor cannot run these nodes

    def typed(self, raw: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
        """`raw` as the types the DAG declares (see typed_inputs)."""
        return typed_inputs(self.name, self.declared, raw, strict=strict)

    def check(self, inputs: Mapping[str, Any]) -> None:
        """Hamilton's check of the input values (PipelineError, field `inputs`)."""
        given = {**self.placeholders, **inputs}
        try:
            hamilton_driver.Driver.validate_inputs(
                self.driver.graph, self.driver.adapter, self.user_nodes, given, self.nodes
            )
        except ValueError as exc:
            raise PipelineError(f"pipeline {self.name!r}: {exc}", field="inputs") from None
        if self.executor_error is not None:
            raise PipelineError(self.executor_error, field="inputs")

    def fingerprint(self) -> tuple | None:
        """What `typed` and `check` depend on, compared by value: two checks with equal
        fingerprints say the same of any values (a reload's new check of an unchanged
        pipeline). Types, config values and the executor's answer compare by `==` -- a
        class re-imported from an edited module is another object, so its check is not
        equal. None: an adapter checks input values itself (its state is not compared)."""
        adapter = hamilton_driver.Driver.normalize_adapter_input(self.driver.adapter)
        if adapter.does_method("do_validate_input", is_async=False):
            return None
        users = sorted((_user_node(n, self.nodes) for n in self.user_nodes), key=_first)
        return (
            self.name,
            tuple(sorted(self.declared.items(), key=_first)),
            tuple(sorted(((k, type(v)) for k, v in self.placeholders.items()), key=_first)),
            tuple(users),
            tuple(sorted(node.name for node in self.nodes)),
            tuple(sorted(self.driver.graph.config.items(), key=_first)),
            self.warnings,
            self.executor_error,
        )


def _first(item: tuple) -> Any:
    return item[0]


def _user_node(node: Any, nodes: frozenset) -> tuple:
    """An input node as Hamilton's input check reads it: its type, and whether each node
    using it (named in its message) needs it."""
    users = tuple(
        sorted(
            ((d.name, d in nodes, d.input_types[node.name][1]) for d in node.depended_on_by),
            key=_first,
        )
    )
    return node.name, node.type, users


def typed_inputs(
    name: str, declared: Mapping[str, Any], raw: Mapping[str, Any], *, strict: bool
) -> dict[str, Any]:
    """Inputs as the types `declared` names for them where nothing is lost
    (daemon.inputs.convert_input). `strict`: an input the DAG does not have is refused;
    otherwise it is passed on as it is. A secret reference is read when the run runs."""
    inputs = {}
    for key, value in raw.items():
        if secrets.is_reference(value):  # read when the run runs (daemon.revealed)
            inputs[key] = value
        elif key in declared:
            inputs[key] = convert_input(key, value, declared[key])
        elif not strict:
            inputs[key] = value
        else:
            raise PipelineError(
                f"pipeline {name!r} has no input {key!r}{did_you_mean(key, declared)}",
                field=f"inputs.{key}",
            )
    return inputs

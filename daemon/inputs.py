"""Inputs from schedule files and `--input K=V`, as the types the pipeline annotates.

One function, `convert_input`, serves both: a TOML value or a command-line string becomes
the annotated type when nothing is lost -- TOML `60` for a `float`, `"2026-12-01"` for a
`date`, `"60"` for an `int` on the command line. Anything else is an `InputTypeError`
naming the field, the expected type and the given one. A value that already has the
annotated type, or an annotation this cannot check (a DataFrame, a Protocol, `Any`), is
left as it is for Hamilton to judge. `SLOT_INPUTS` are the names flowerd itself passes
(`check_not_reserved` refuses them in schedule files and `--input`).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import pathlib
import types
import typing
from collections.abc import Iterable
from typing import Any

from daemon.errors import InputTypeError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# inputs flowerd passes to a pipeline that declares them: the slot's time (aware, in the
# schedule's timezone) and the run's id; reserved, so never set in `inputs`
SLOT_INPUTS: tuple[str, ...] = ("scheduled_at", "run_id", "trigger_path", "payload")


class _Lost(Exception):
    """The value cannot become the annotated type without loss."""


def check_not_reserved(inputs: Iterable[str]) -> None:
    """ValueError naming the reserved input names (SLOT_INPUTS) among `inputs`."""
    reserved = [name for name in inputs if name in SLOT_INPUTS]
    if reserved:
        names = " and ".join(repr(name) for name in reserved)
        raise ValueError(
            f"{names} {'is' if len(reserved) == 1 else 'are'} reserved: flowerd passes the "
            "slot's time as `scheduled_at`, the run's id as `run_id`, an event's file as "
            "`trigger_path` and a webhook's body as `payload` to a pipeline that declares "
            "them; remove it from the inputs"
        )


def convert_input(name: str, value: Any, annotation: Any) -> Any:
    """Input `name`'s `value` as `annotation`, or InputTypeError naming the input, the
    expected and the given type (its `field` is `inputs.<name>`)."""
    try:
        return _convert(value, annotation)
    except _Lost:
        raise InputTypeError(
            f"input {name!r}: expected {_type_name(annotation)}, given {_given(value)}",
            field=f"inputs.{name}",
        ) from None


def _convert(value: Any, annotation: Any) -> Any:
    if annotation is Any or annotation is object or annotation is None:
        return value
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _union(value, typing.get_args(annotation))
    if origin is typing.Literal:
        return value
    target = origin if isinstance(origin, type) else annotation
    if not isinstance(target, type):
        return value  # a TypeVar, a NewType, ...: nothing to check here
    if _is_instance(value, target):
        return value
    convert = _CONVERTERS.get(target)
    if convert is None:
        if target in (list, tuple, set, frozenset, dict) and isinstance(value, str):
            return _container(json_value(value), target)
        if target in (list, tuple, set, frozenset) and isinstance(value, list | tuple):
            return target(value)
        if isinstance(value, str) and _is_plain_type(target):
            raise _Lost
        return value  # a class we do not know: Hamilton's own check decides
    return convert(value)


def _union(value: Any, members: tuple) -> Any:
    if value is None and type(None) in members:
        return None
    for member in members:  # already one of them: keep it
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and _is_instance(value, origin):
            return value
    for member in members:
        if member is type(None):
            continue
        try:
            return _convert(value, member)
        except _Lost:
            continue
    raise _Lost


def _is_instance(value: Any, target: type) -> bool:
    if isinstance(value, bool) and target is not bool and target in (int, float):
        return False  # TOML true is not a number
    if target is _dt.date and isinstance(value, _dt.datetime):
        return False  # a datetime is a date subclass, but its time would be lost
    return isinstance(value, target)


def _is_plain_type(target: type) -> bool:
    return target.__module__ == "builtins"


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _Lost from None


def _container(value: Any, target: type) -> Any:
    if target is dict:
        if isinstance(value, dict):
            return value
        raise _Lost
    if isinstance(value, list):
        return target(value)
    raise _Lost


def _to_int(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
        raise _Lost
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
        return int(value)
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        return int(value)
    raise _Lost


def _to_float(value: Any) -> float:
    if isinstance(value, int) and not isinstance(value, bool):
        result = float(value)
        if int(result) == value:  # beyond 2**53 an int does not fit a float exactly
            return result
        raise _Lost
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _Lost from None
    raise _Lost


def _to_bool(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _Lost


def _to_str(value: Any) -> str:
    raise _Lost  # a number or a table for a str input: say so rather than guess


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise _Lost from None
    raise _Lost


def _from_iso(kind: type):
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return kind.fromisoformat(value.strip())
            except ValueError:
                raise _Lost from None
        raise _Lost

    return convert


def _to_path(value: Any) -> pathlib.Path:
    if isinstance(value, str):
        return pathlib.Path(value)
    raise _Lost


_CONVERTERS = {
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    str: _to_str,
    decimal.Decimal: _to_decimal,
    _dt.date: _from_iso(_dt.date),
    _dt.datetime: _from_iso(_dt.datetime),
    _dt.time: _from_iso(_dt.time),
    pathlib.Path: _to_path,
}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def _given(value: Any) -> str:
    shown = json.dumps(value) if isinstance(value, str) else None
    if shown is not None and len(shown) > 60:
        shown = shown[:57] + '..."'
    name = type(value).__qualname__
    return f"{name} {shown}" if shown else f"{name} {value!r:.60}"


__all__ = ["convert_input"]

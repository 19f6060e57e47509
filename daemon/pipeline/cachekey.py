"""Exact keys for config values: the driver cache may only share a driver between runs
whose configs are equal by value, so two configs never collide on one key.

`value_key(config)` is a canonical, type-tagged encoding: `1`, `1.0` and `True` differ,
dict order counts (a node may iterate a config dict), tuple and mixed-type dict keys
work. numpy arrays key by dtype, shape and bytes; pandas objects by their dtypes, index,
columns and `hash_pandas_object` row hashes. Never `repr`: pandas elides rows in it.
A value that cannot be keyed exactly (an arbitrary object) gives None: that driver is
not cached, and is built for every run instead -- slower, never wrong.

This module imports neither numpy nor pandas unless a value is one of theirs.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import hashlib
import pathlib
import uuid
from collections.abc import Hashable, Mapping
from typing import Any


class Unkeyable(Exception):
    """A value with no exact key."""


_SCALARS = (type(None), bool, int, str, bytes, decimal.Decimal, uuid.UUID)
_TEMPORAL = (_dt.datetime, _dt.date, _dt.time, _dt.timedelta)


def value_key(value: Any) -> Hashable | None:
    """The exact key of `value` (a config, a cache option); None if it has none."""
    try:
        return _key(value)
    except Unkeyable:
        return None


def _key(value: Any) -> Hashable:
    kind = type(value)
    tag = f"{kind.__module__}.{kind.__qualname__}"
    if kind in _SCALARS:
        return (tag, value)
    if kind is float:
        return (tag, value.hex())  # exact; -0.0 and 0.0 differ, as they may in a result
    if isinstance(value, enum.Enum):
        return (tag, value.name)
    if isinstance(value, _TEMPORAL):
        return (tag, _temporal(value))
    if isinstance(value, pathlib.PurePath):
        return (tag, str(value))
    if isinstance(value, Mapping):
        return (tag, tuple((_key(k), _key(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (tag, tuple(_key(v) for v in value))
    if isinstance(value, set | frozenset):
        return (tag, frozenset(_key(v) for v in value))
    if kind.__module__.startswith("numpy"):
        return (tag, _numpy(value))
    if kind.__module__.startswith("pandas"):
        return (tag, _pandas(value))
    raise Unkeyable(tag)


def _temporal(value: Any) -> tuple:
    zone = getattr(value, "tzinfo", None)
    zone_key = None if zone is None else (type(zone).__qualname__, str(zone))
    return (value.isoformat(), getattr(value, "fold", 0), zone_key)


def _numpy(value: Any) -> tuple:
    import numpy as np

    array = np.asarray(value)
    if array.dtype.hasobject:
        raise Unkeyable("numpy object array")
    return (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())


def _pandas(value: Any) -> tuple:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        frame = value
        shape = ("frame", tuple(str(d) for d in frame.dtypes), _index(frame.columns))
    elif isinstance(value, pd.Series):
        frame = value.to_frame()
        shape = ("series", str(value.dtype), _key(value.name))
    elif isinstance(value, pd.Index):
        return ("index", _index(value))
    else:
        raise Unkeyable(type(value).__qualname__)
    try:
        rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError as exc:  # unhashable cells (lists, dicts)
        raise Unkeyable(str(exc)) from None
    return (*shape, _index(frame.index), hashlib.sha256(rows.tobytes()).hexdigest())


def _index(index: Any) -> tuple:
    import pandas as pd

    try:
        hashed = pd.util.hash_pandas_object(index).to_numpy().tobytes()
    except TypeError as exc:
        raise Unkeyable(str(exc)) from None
    names = tuple(_key(name) for name in index.names)
    return (type(index).__qualname__, str(index.dtype), names, hashlib.sha256(hashed).hexdigest())


__all__ = ["value_key"]

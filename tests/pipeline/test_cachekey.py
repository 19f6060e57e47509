"""Exact config keys (daemon/pipeline/cachekey.py): equal keys only for equal values."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from daemon.pipeline.cachekey import value_key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0.0, -0.0),
        ("1", 1),
        ((1, 2), [1, 2]),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # a node may iterate a config dict
        ({(1, "a"): 1}, {(1, "a"): 1.0}),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))),
        (np.array([1, 2], dtype="int64"), np.array([1, 2], dtype="int32")),
        (np.array([1, 2]), np.array([[1, 2]])),
        (pd.DataFrame({"v": [1, 2]}), pd.DataFrame({"w": [1, 2]})),
        (pd.DataFrame({"v": [1, 2]}), pd.DataFrame({"v": [1, 2]}, index=[5, 6])),
        (pd.DataFrame({"v": [1, 2]}), pd.DataFrame({"v": [1.0, 2.0]})),
        (pd.Series([1, 2], name="a"), pd.Series([1, 2], name="b")),
    ],
)
def test_different_values_have_different_keys(a, b):
    assert value_key(a) is not None and value_key(a) != value_key(b)


def test_equal_values_share_a_key_and_mixed_keys_work():
    frame = pd.DataFrame({"v": range(500), "s": ["x"] * 500})
    assert value_key({"f": frame, (1, "a"): {2: "b", "c": (3,)}}) == value_key(
        {"f": frame.copy(), (1, "a"): {2: "b", "c": (3,)}}
    )
    changed = frame.copy()
    changed.loc[250, "v"] = -1
    assert repr(changed) == repr(frame) and value_key(changed) != value_key(frame)


def test_values_with_no_exact_key():
    class Thing:
        pass

    assert value_key({"thing": Thing()}) is None
    assert value_key(np.array([object()], dtype=object)) is None
    assert value_key(pd.DataFrame({"v": [[1], [2]]})) is None

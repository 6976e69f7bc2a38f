"""Recomputes every golden case and compares it with `golden/data/<case>.json`.

Losses and logits must agree to float32 rounding, cost figures exactly, exported
files byte for byte. After a deliberate change, rerun `python -m tests.golden.record
<case>` and explain the difference in the commit.
"""

import json

import numpy as np
import pytest

from tests.golden.cases import CASES, compute, golden_path

FAST = {"super_vit"}  # the main job's model runs in the default suite; the rest with -m slow


def _close(actual, expected, path=""):
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys differ: {sorted(set(actual) ^ set(expected))}"
        for k in expected:
            _close(actual[k], expected[k], f"{path}/{k}")
    elif isinstance(expected, list) and expected and all(isinstance(v, (int, float)) for v in expected):
        np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=2e-5, atol=2e-6,
                                   err_msg=path)
    elif isinstance(expected, float):
        np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-6, err_msg=path)
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            _close(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("name", [pytest.param(c, marks=() if c in FAST else pytest.mark.slow) for c in CASES])
def test_golden(name):
    with open(golden_path(name)) as f:
        expected = json.load(f)
    actual = json.loads(json.dumps(compute(name)))
    _close(actual, expected, name)

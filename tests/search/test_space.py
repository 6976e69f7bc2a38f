"""Parameters, spaces and objectives: encoding round trips, constraints, bad inputs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from effjax.search import Categorical, Float, Int, Objective, Ordinal, Space


def mixed_space(constraints=()):
    return Space([
        Float("lr", 1e-4, 1e-1, log=True),
        Float("dropout", 0.0, 0.5),
        Int("layers", 1, 6),
        Ordinal("width", [0.25, 0.5, 0.75, 1.0]),
        Categorical("act", ["relu", "gelu", ("swish", 1)]),
    ], constraints)


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-4, 1e-1), dropout=st.floats(0.0, 0.5), layers=st.integers(1, 6),
       width=st.sampled_from([0.25, 0.5, 0.75, 1.0]), act=st.sampled_from(["relu", "gelu", ("swish", 1)]))
def test_every_kind_round_trips_through_the_unit_cube(lr, dropout, layers, width, act):
    space = mixed_space()
    params = {"lr": lr, "dropout": dropout, "layers": layers, "width": width, "act": act}
    x = space.encode(params)
    assert x.shape == (space.dim,) and np.all((x >= -1e-12) & (x <= 1 + 1e-12))
    back = space.decode(x)
    assert back["lr"] == pytest.approx(lr, rel=1e-9)
    assert back["dropout"] == pytest.approx(dropout, abs=1e-12)
    assert back["layers"] == layers and back["width"] == width and back["act"] == act
    assert np.allclose(space.encode(back), x)


def test_encoding_layout_and_rounding():
    space = mixed_space()
    assert space.dim == 1 + 1 + 1 + 1 + 3
    x = np.array([0.5, 0.5, 0.49, 0.4, 0.2, 0.7, 0.1])
    p = space.decode(x)
    assert p["lr"] == pytest.approx(math.sqrt(1e-4 * 1e-1))  # log scale midpoint
    assert p["layers"] == 3 and p["width"] == 0.5 and p["act"] == "gelu"
    rounded = space.round(x)
    assert np.allclose(rounded[4:], [0, 1, 0]) and rounded[3] == pytest.approx(1 / 3)


def test_discrete_enumeration_neighbours_and_keys():
    space = Space([Ordinal("w", [1, 2, 3]), Categorical("c", ["a", "b"]), Int("k", 1, 2)])
    assert space.is_discrete and space.cardinality == 12
    all_params = list(space.iter_all())
    assert len(all_params) == 12 and len({space.key(p) for p in all_params}) == 12
    nbrs = space.neighbours({"w": 2, "c": "a", "k": 1})
    assert {"w": 1, "c": "a", "k": 1} in nbrs and {"w": 3, "c": "a", "k": 1} in nbrs
    assert {"w": 2, "c": "b", "k": 1} in nbrs and {"w": 2, "c": "a", "k": 2} in nbrs and len(nbrs) == 4
    with pytest.raises(ValueError, match="enumerated"):
        list(mixed_space().iter_all())


def test_constraints_and_validation():
    space = mixed_space([lambda p: p["layers"] * p["width"] <= 2])
    assert space.is_feasible({"lr": 1e-3, "dropout": 0.1, "layers": 2, "width": 1.0, "act": "relu"})
    assert not space.is_feasible({"lr": 1e-3, "dropout": 0.1, "layers": 4, "width": 1.0, "act": "relu"})
    ok = space.validate({"lr": 1e-3, "dropout": 0.1, "layers": 2, "width": 1.0, "act": ["swish", 1]})
    assert ok["act"] == ("swish", 1)  # JSON turns tuples into lists; validate maps them back
    with pytest.raises(ValueError, match="missing"):
        space.validate({"lr": 1e-3})
    with pytest.raises(ValueError, match="width"):
        space.validate({"lr": 1e-3, "dropout": 0.1, "layers": 2, "width": 0.3, "act": "relu"})


@pytest.mark.parametrize("make, match", [
    (lambda: Float("x", 1.0, 1.0), "low < high"),
    (lambda: Float("x", 2.0, 1.0), "low < high"),
    (lambda: Float("x", 0.0, 1.0, log=True), "low > 0"),
    (lambda: Int("n", 5, 5), "low < high"),
    (lambda: Int("n", 1.5, 3), "integers"),
    (lambda: Ordinal("o", []), "non-empty"),
    (lambda: Categorical("c", ["a", "a"]), "distinct"),
    (lambda: Space([]), "at least one parameter"),
    (lambda: Space([Float("x", 0, 1), Int("x", 0, 3)]), "appears twice"),
    (lambda: Space([Float("x", 0, 1)], constraints=[3]), "callables"),
    (lambda: Objective("f", "up"), "'min' or 'max'"),
    (lambda: Objective("", "min"), "non-empty"),
])
def test_bad_inputs_raise_clear_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()

"""Test problems: known optima lie on the stated fronts and give the stated hypervolumes."""

import numpy as np
import pytest

from effjax.search import hypervolume, pareto_front
from effjax.search.problems import DTLZ2, ZDT, BraninCurrin, VehicleSafety, get_problem


def test_dtlz2_optimal_inputs_lie_on_the_unit_sphere():
    for m in (2, 3):
        p = DTLZ2(6, m)
        x = np.random.default_rng(0).random((50, 6))
        x[:, m - 1:] = 0.5
        assert np.allclose(np.linalg.norm(p.evaluate(x), axis=1), 1.0)
    assert DTLZ2(6, 2).max_hv == pytest.approx(0.4246018366)
    assert DTLZ2(6, 3).max_hv == pytest.approx(1.331 - np.pi / 6)


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_zdt_front_hypervolume(variant):
    p = ZDT(variant, 4)
    x = np.zeros((4000, 4))
    x[:, 0] = np.linspace(0, 1, 4000)
    front = pareto_front(p.evaluate(x))
    assert hypervolume(front, p.ref_point) == pytest.approx(p.max_hv, rel=2e-4)


def test_branin_currin_and_vehicle_safety_values():
    bc = BraninCurrin()
    # Branin's minimum 0.397887 at (pi, 2.275) in original units.
    y = bc.evaluate(np.array([[(np.pi + 5) / 15, 2.275 / 15]]))
    assert y[0, 0] == pytest.approx(0.397887, abs=1e-5)
    assert np.all(np.isfinite(bc.evaluate(np.array([[0.3, 0.0]]))))
    vs = VehicleSafety()
    corners = vs.evaluate(np.array([[1.0] * 5, [3.0] * 5]))
    assert corners[0, 0] == pytest.approx(1640.2823 + 21.4255225)
    assert bc({"x0": 0.5, "x1": 0.5}).keys() == {"f0", "f1"}


def test_get_problem_rejects_unknown_names():
    assert get_problem("DTLZ2").n_objectives == 2
    with pytest.raises(ValueError, match="unknown"):
        get_problem("nope")

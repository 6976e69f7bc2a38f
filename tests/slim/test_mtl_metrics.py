"""delta_m, controllability and hypervolume."""

import numpy as np
import pytest

from effjax.data.specs import TaskSpec
from effjax.train import mtl_metrics

TASKS = (TaskSpec("segmentation", "segmentation", 4), TaskSpec("depth", "depth"), TaskSpec("count", "classification", 4))


def test_delta_m_signs_lower_is_better_tasks():
    single = {"segmentation": 0.5, "depth": 2.0, "count": 0.8}
    mt = {"segmentation": 0.55, "depth": 2.2, "count": 0.8}  # +10%, -10% (depth worse), 0%
    assert mtl_metrics.delta_m(mt, single, TASKS) == pytest.approx(0.0, abs=1e-9)
    mt = {"segmentation": 0.55, "depth": 1.8, "count": 0.88}
    assert mtl_metrics.delta_m(mt, single, TASKS) == pytest.approx(100 * (0.1 + 0.1 + 0.1) / 3)
    with pytest.raises(ValueError, match="missing"):
        mtl_metrics.delta_m({"segmentation": 0.5}, single, TASKS)


def test_controllability_is_spearman_of_preference_and_performance():
    p = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert mtl_metrics.controllability(p, [1, 2, 2.5, 3, 7, 9]) == pytest.approx(1.0)
    assert mtl_metrics.controllability(p, [9, 7, 3, 2.5, 2, 1]) == pytest.approx(-1.0)
    assert mtl_metrics.controllability(p, [1, 1, 1, 1, 1, 1]) == 0.0
    assert mtl_metrics.oriented(TASKS[1], 2.0) == -2.0
    with pytest.raises(ValueError, match="controllability"):
        mtl_metrics.controllability([0.1], [1.0])


def test_hypervolume_is_the_staircase_area_of_the_non_dominated_points():
    points = np.array([[1.0, 0.5], [2.0, 0.8], [3.0, 0.9], [2.5, 0.6]])  # (FLOPs: min, score: max)
    ref = (4.0, 0.0)
    expected = 3.0 * 0.5 + 2.0 * 0.3 + 1.0 * 0.1  # staircase of the three non-dominated points
    assert mtl_metrics.hypervolume(points, ref) == pytest.approx(expected)
    assert mtl_metrics.hypervolume([[5.0, 1.0]], ref) == 0.0  # beyond the reference point: nothing dominated

"""The stage-2 recipe selection of experiments/sparsifiner/plot.py: val metric, tie rules, shapes metric."""

import pytest

from experiments.sparsifiner.plot import select, selection_metric

DIGITS = {"digit": "accuracy", "parity": "accuracy", "ge5": "accuracy"}
SHAPES = {"segmentation": "miou", "depth": "rmse", "count": "accuracy"}


def row(val, test=None):
    return {"metrics": {"val": val, "test": test or val}}


def recipe(lr, steps):
    return {"learning_rate": lr, "num_steps": steps}


def test_digits_selects_the_highest_val_mean_and_ignores_test():
    good = row({"digit": 0.97, "parity": 0.98, "ge5": 0.98}, test={"digit": 0.5, "parity": 0.5, "ge5": 0.5})
    bad = row({"digit": 0.99, "parity": 0.95, "ge5": 0.95}, test={"digit": 1.0, "parity": 1.0, "ge5": 1.0})
    assert selection_metric(good, DIGITS) == pytest.approx((0.97 + 0.98 + 0.98) / 3)
    assert select([("bad", recipe(5e-4, 600), bad), ("good", recipe(5e-4, 600), good)], DIGITS) == "good"


def test_ties_go_to_the_default_then_fewer_steps_then_the_lower_learning_rate():
    same = row({"digit": 0.9, "parity": 0.9, "ge5": 0.9})
    assert select([("a", recipe(1e-4, 200), same), ("default", recipe(5e-4, 600), same)], DIGITS) == "default"
    assert select([("long", recipe(1e-4, 600), same), ("short", recipe(2e-4, 200), same)], DIGITS) == "short"
    assert select([("fast", recipe(2e-4, 200), same), ("slow", recipe(1e-4, 200), same)], DIGITS) == "slow"


def test_shapes_is_selected_on_segmentation_miou_and_other_task_sets_are_refused():
    r = row({"segmentation": 0.6, "depth": 0.9, "count": 0.1})
    assert selection_metric(r, SHAPES) == 0.6
    with pytest.raises(ValueError, match="need all accuracy tasks or a segmentation"):
        selection_metric(row({"depth": 0.9}), {"depth": "rmse"})

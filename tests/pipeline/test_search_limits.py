"""Cost limits of the supernet search: every evaluated point satisfies them; bad limits fail in one line."""

import os

import pytest

from effjax.config.load import load_config
from effjax.job import subnet_search as ss
from effjax.job.subnet_search import cost_limits
from tests.foundation.helpers import REPO, untrained_evaluator


def test_every_evaluated_point_is_within_the_flops_limit(tmp_path):
    """The main job's search (`run_search`) on a randomly initialized supernet: the limits are the search
    space's constraints, whatever the weights, so no training is needed to check them."""
    config = load_config(os.path.join(REPO, "configs", "pipeline.py") + ":digits,tiny")
    config.log.progress_bar = False
    config.search.max_flops = 1.5e5
    evaluator = untrained_evaluator(config)
    result = ss.run_search(evaluator, config.search, str(tmp_path), seed=config.seed)
    points = ss.pareto_points(evaluator, result)
    assert len(points) == config.search.budget
    assert all(p["cost"]["flops"] <= 1.5e5 for p in points)
    assert all(p["config"]["encoder_width"] < 1 for p in points)  # the full corner is too costly


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "big", True])
def test_bad_limits_are_refused(value):
    config = load_config(os.path.join(REPO, "configs", "pipeline.py") + ":digits,tiny")
    config.search.max_bits = None
    with pytest.raises(ValueError, match="config.search.max_bits"):
        cost_limits({"max_bits": value})

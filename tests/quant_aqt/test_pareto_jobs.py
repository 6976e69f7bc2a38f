"""The run list of experiments/quantized_pareto/run.py: scratch precisions, int4 recipes and their float controls."""

import argparse

import pytest

from experiments.quantized_pareto.run import Job, jobs_for


def args(**kw):
    base = dict(seeds="0", only="shapes", widths="32", precisions="float,4", recipes="scratch,from_float",
                recipe_precisions="4")
    return argparse.Namespace(**{**base, **kw})


def test_recipes_run_at_recipe_precisions_and_a_float_control_starts_from_the_float_run():
    jobs = jobs_for(args(seeds="0,1", recipe_precisions="4,float"))
    names = sorted({j.name for j in jobs})
    assert names == ["shapes_w32_4", "shapes_w32_4_from_float", "shapes_w32_float", "shapes_w32_float_from_float"]
    assert len(jobs) == 8 and {j.seed for j in jobs} == {0, 1}
    control = next(j for j in jobs if j.name == "shapes_w32_float_from_float")
    assert control.float_job() == Job("shapes", 32, "float", control.seed)


def test_without_scratch_only_recipe_runs_are_listed_and_bad_values_are_refused():
    assert {j.recipe for j in jobs_for(args(recipes="from_float"))} == {"from_float"}
    with pytest.raises(ValueError, match="--recipe_precisions"):
        jobs_for(args(recipe_precisions="2"))

"""Ask/tell optimizer and `optimize`: batches, constraints, computed objectives, resume, errors."""

import json
import os

import jax
import numpy as np
import pytest

from effjax.search import Categorical, Float, Int, Objective, Optimizer, Ordinal, Space, optimize
from effjax.search import optimizer as optimizer_module
from effjax.search.nsga2 import nsga2_search, sobol_search
from effjax.search.problems import BraninCurrin

BC = BraninCurrin()


def constrained_space():
    return Space([Float("x0", 0.0, 1.0), Float("x1", 0.0, 1.0)], constraints=[lambda p: p["x0"] + p["x1"] <= 1.2])


def test_batch_proposals_are_distinct_and_feasible():
    space = constrained_space()
    opt = Optimizer(space, BC.objectives, seed=0, n_initial=5)
    for trial in opt.ask(5):
        opt.tell(trial, BC(trial.params))
    batch = opt.ask(3)
    assert len(batch) == 3 and len({t.id for t in batch}) == 3
    keys = {tuple(sorted(t.params.items())) for t in batch}
    assert len(keys) == 3
    assert all(t.params["x0"] + t.params["x1"] <= 1.2 for t in batch)
    seen = {tuple(sorted(e.params.items())) for e in opt.history}
    assert not keys & seen
    for t in batch:
        opt.tell(t, BC(t.params))
    assert len(opt.history) == 8 and not opt.pending


def test_computed_objectives_are_not_modeled_and_discrete_space_is_enumerated(monkeypatch):
    space = Space([Ordinal("width", [0.25, 0.5, 0.75, 1.0]), Int("topk", 1, 2), Ordinal("bits", [4, 8, 32]),
                   Categorical("attn", ["full", "sparse"])],
                  constraints=[lambda p: not (p["bits"] == 4 and p["width"] == 0.25)])
    flops = lambda p: p["width"] ** 2 * p["topk"] * (0.5 if p["attn"] == "sparse" else 1.0)  # noqa: E731
    objectives = [Objective("accuracy", "max"), Objective("flops", "min", fn=flops), Objective("bits", "min", fn=lambda p: p["bits"])]
    fitted_shapes = []
    original = optimizer_module.fit_gp

    def spy(x, y, **kw):
        fitted_shapes.append(np.shape(y))
        return original(x, y, **kw)

    monkeypatch.setattr(optimizer_module, "fit_gp", spy)
    calls = []

    def fn(p):
        calls.append(p)
        acc = 0.9 - 0.3 * (1 - p["width"]) ** 2 - 0.05 * (p["bits"] == 4) + 0.02 * p["topk"]
        return {"accuracy": acc}  # computed objectives need not be returned

    result = optimize(fn, space, objectives, budget=10, seed=1, batch_size=2, progress=False, n_initial=4)
    assert len(result.history) == 10 == len(calls)
    assert fitted_shapes and all(s[1] == 1 for s in fitted_shapes)  # only accuracy is modeled
    keys = [tuple(sorted(e.params.items())) for e in result.history]
    assert len(set(keys)) == 10
    for e in result.history:
        assert space.is_feasible(e.params)
        assert e.values["flops"] == flops(e.params) and e.values["bits"] == e.params["bits"]
    assert [e.id for e in result.history] == list(range(10))
    assert 1 <= len(result.pareto) <= 10


class Killed(RuntimeError):
    pass


def test_resume_after_a_kill_loses_and_repeats_nothing(tmp_path):
    space = constrained_space()
    calls = []

    def dying_fn(p):
        if len(calls) == 6:
            raise Killed()
        calls.append(p)
        return BC(p)

    workdir = str(tmp_path / "run")
    with pytest.raises(Killed):
        optimize(dying_fn, space, BC.objectives, budget=9, seed=3, workdir=workdir, progress=False, n_initial=4)
    lines = open(os.path.join(workdir, "evaluations.jsonl")).read().splitlines()
    assert len(lines) == 6
    with open(os.path.join(workdir, "evaluations.jsonl"), "a") as f:
        f.write('{"id": 6, "params": {"x0"')  # a write cut short by the kill

    resumed_calls = []

    def fn(p):
        resumed_calls.append(p)
        return BC(p)

    resumed = optimize(fn, space, BC.objectives, budget=9, seed=3, workdir=workdir, progress=False, n_initial=4)
    assert len(resumed_calls) == 3 and len(resumed.history) == 9
    assert [e.params for e in resumed.history[:6]] == calls
    assert [e.id for e in resumed.history] == list(range(9))
    records = [json.loads(line) for line in open(os.path.join(workdir, "evaluations.jsonl"))]
    assert len(records) == 9
    # The resumed search proposes exactly what an uninterrupted one would have.
    straight = optimize(BC, space, BC.objectives, budget=9, seed=3, workdir=str(tmp_path / "straight"),
                        progress=False, n_initial=4)
    assert [e.params for e in straight.history] == [e.params for e in resumed.history]
    # Resuming a finished search evaluates nothing more.
    again = optimize(fn, space, BC.objectives, budget=9, seed=3, workdir=workdir, progress=False, n_initial=4)
    assert len(again.history) == 9 and len(resumed_calls) == 3


def test_bad_inputs_raise_value_errors(tmp_path):
    space = constrained_space()
    with pytest.raises(ValueError, match="budget"):
        optimize(BC, space, BC.objectives, budget=0)
    with pytest.raises(ValueError, match="batch_size"):
        optimize(BC, space, BC.objectives, budget=3, batch_size=0)
    with pytest.raises(ValueError, match="no value for objective 'f1'"):
        optimize(lambda p: {"f0": 1.0}, space, BC.objectives, budget=2, progress=False)
    with pytest.raises(ValueError, match="'f0'.*finite"):
        optimize(lambda p: {"f0": float("nan"), "f1": 1.0}, space, BC.objectives, budget=2, progress=False)
    with pytest.raises(ValueError, match="at least one objective must be modeled"):
        Optimizer(space, [Objective("a", "min", fn=lambda p: 1.0)])
    with pytest.raises(ValueError, match="appears twice"):
        Optimizer(space, [Objective("a", "min"), Objective("a", "max")])
    with pytest.raises(ValueError, match="no feasible configuration"):
        Optimizer(Space([Float("x", 0, 1)], [lambda p: False]), [Objective("a", "min")]).ask()
    workdir = str(tmp_path / "w")
    optimize(BC, space, BC.objectives, budget=2, workdir=workdir, progress=False)
    with pytest.raises(ValueError, match="different space"):
        optimize(BC, Space([Float("x0", 0.0, 2.0), Float("x1", 0.0, 1.0)]), BC.objectives, budget=3, workdir=workdir,
                 progress=False)
    opt = Optimizer(space, BC.objectives)
    with pytest.raises(ValueError, match="not pending"):
        opt.tell(99, {"f0": 1.0, "f1": 1.0})


def test_small_branin_currin_run_beats_sobol_and_keeps_x64_off():
    assert not jax.config.jax_enable_x64
    budget = 14
    bo = optimize(BC, BC.space, BC.objectives, budget=budget, seed=0, progress=False, n_initial=6)
    assert not jax.config.jax_enable_x64
    sobol = sobol_search(BC, BC.space, BC.objectives, budget=budget, seed=0)
    assert len(bo.history) == budget and len(bo.pareto) >= 2
    assert bo.hypervolume() > sobol.hypervolume()
    assert len(bo.proposal_seconds) > 0


def test_nsga2_improves_on_its_initial_population():
    result = nsga2_search(BC, BC.space, BC.objectives, budget=40, seed=0, population=10)
    assert len(result.history) == 40
    first = type(result)(result.history[:10], [], result.objectives)
    assert result.hypervolume() > first.hypervolume()


@pytest.mark.slow
def test_branin_currin_40_evaluations_reaches_high_hypervolume():
    bo = optimize(BC, BC.space, BC.objectives, budget=40, seed=1, progress=False)
    sobol = sobol_search(BC, BC.space, BC.objectives, budget=40, seed=1)
    assert bo.hypervolume() > 57.0 > sobol.hypervolume()


def test_initial_params_are_evaluated_first_and_validated():
    space = Space([Int("a", 0, 9), Categorical("c", ["x", "y"])])
    objectives = [Objective("f", "min"), Objective("g", "min")]
    seen = []

    def fn(p):
        seen.append(dict(p))
        return {"f": p["a"], "g": 9 - p["a"] + (p["c"] == "x")}

    optimize(fn, space, objectives, budget=4, seed=0, progress=False,
                    initial_params=[{"a": 9, "c": "y"}, {"a": 0, "c": "x"}])
    assert seen[:2] == [{"a": 9, "c": "y"}, {"a": 0, "c": "x"}] and len(seen) == 4
    with pytest.raises(ValueError, match="outside its domain"):
        optimize(fn, space, objectives, budget=2, progress=False, initial_params=[{"a": 11, "c": "x"}])

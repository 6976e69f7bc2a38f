"""tools.bench_search peers: the BoTorch peer on a tiny budget, and the table's rows per method and reference policy."""

import json
import math

import pytest

from effjax.search import Categorical, Float, Int, Ordinal
from effjax.search.problems import get_problem
from tools import bench_search


def test_botorch_peer_tiny_budget(monkeypatch):
    pytest.importorskip("botorch")
    problem = get_problem("branincurrin")
    budget = 2 * (len(problem.space.params) + 1) + 2  # the Sobol design, then two model-based proposals
    results = []

    def recorded(*args):
        results.append(run_botorch(*args))
        return results[-1]

    run_botorch = bench_search._botorch
    monkeypatch.setattr(bench_search, "_botorch", recorded)
    # Seed 5: its Sobol design already has a point inside the reference box, so the HV is > 0.
    row = bench_search.run_method(bench_search.BOTORCH_NO_REF, problem, budget, seed=5, given_ref=False)
    assert (row["method"], row["given_ref"], row["reference"]) == (bench_search.BOTORCH_NO_REF, False,
                                                                   "botorch infer_reference_point")
    assert len(row["trace"]) == budget
    assert math.isfinite(row["hv"]) and row["hv"] > 0
    (result,) = results
    assert [e.id for e in result.history] == list(range(budget))
    for evaluation in result.history:
        for parameter in problem.space.params:
            assert parameter.low <= evaluation.params[parameter.name] <= parameter.high


@pytest.mark.slow  # about 25 s: a 12-point design, one mixed proposal
def test_botorch_decodes_mixed_parameters_into_the_space():
    pytest.importorskip("botorch")
    problem = get_problem("compression_mixed")
    budget = 2 * (len(problem.space.params) + 1) + 1
    result = bench_search._botorch(problem, budget, seed=0, given_ref=False)
    assert len(result.history) == budget
    for evaluation in result.history:
        for parameter in problem.space.params:
            value = evaluation.params[parameter.name]
            if isinstance(parameter, Int):
                assert isinstance(value, int) and parameter.low <= value <= parameter.high
            elif isinstance(parameter, (Ordinal, Categorical)):
                assert value in parameter.values
            else:
                assert isinstance(parameter, Float) and parameter.low <= value <= parameter.high


def test_peers_table_keeps_reference_policies_apart():
    def row(method, given_ref, seed, hv):
        return {"method": method, "problem": "P", "given_ref": given_ref, "seed": seed, "hv": hv, "max_hv": 10.0,
                "cpu_s": 1.0, "wall_s": 1.0}

    rows = [row("Sobol", True, 0, 1.0), row(bench_search.BOTORCH, True, 0, 4.0),
            row(bench_search.BOTORCH_NO_REF, False, 0, 3.0), row("qLogNEHVI", True, 0, 5.0),
            row("qLogNEHVI", False, 0, 2.0)]
    lines = bench_search.peers_table(rows).splitlines()[2:]
    labels = [line.split(" | ")[1] for line in lines]
    assert labels == ["Sobol", "BoTorch qLogNEHVI", "BoTorch qLogNEHVI (no ref)", "qLogNEHVI", "qLogNEHVI (no ref)"]
    assert [line.split(" | ")[3].split(" ")[0] for line in lines] == ["1.0000", "4.0000", "3.0000", "5.0000", "2.0000"]


def test_a_later_file_replaces_the_same_run_and_keeps_the_others(tmp_path):
    def row(seed, cpu, method="qLogNEHVI (no ref)"):
        return json.dumps({"problem": "VehicleSafety", "method": method, "given_ref": False, "seed": seed,
                           "hv": 240.0 + seed, "cpu_s": cpu})
    first, second = tmp_path / "round.jsonl", tmp_path / "timing.jsonl"
    first.write_text("\n".join([row(10, 32.0), row(11, 20.0), row(10, 5.0, "Sobol")]) + "\n")
    second.write_text(row(10, 22.9) + "\n")
    rows = bench_search.read_peer_rows([str(first), str(second)])
    assert sorted((r["method"], r["seed"], r["cpu_s"]) for r in rows) == [
        ("Sobol", 10, 5.0), ("qLogNEHVI (no ref)", 10, 22.9), ("qLogNEHVI (no ref)", 11, 20.0)]

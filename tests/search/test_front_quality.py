"""tools.front_quality on a synthetic discrete search (no network): fronts, fractions, cache and errors."""

import json

import numpy as np
import pytest

from effjax.search import Ordinal, Space
from tools import front_quality as fq

SPACE = Space([Ordinal("w1", [0.25, 0.5, 0.75, 1.0]), Ordinal("w2", [0.25, 0.5, 0.75, 1.0]),
               Ordinal("weight_bits", [4, 8, 32])])


def score_fn(p):
    return 0.9 - 0.4 * (1 - p["w1"]) ** 2 - 0.2 * (1 - p["w2"]) ** 2 - 0.1 * (p["weight_bits"] == 4)


def cost_fn(p):
    return (p["w1"] * 2.0 + p["w2"] ** 2, (p["w1"] + p["w2"]) * p["weight_bits"])


def test_compare_scores_every_method_against_a_front_that_contains_them(tmp_path):
    calls = []
    score = fq.CachedScores(lambda p: calls.append(p) or score_fn(p), SPACE, str(tmp_path / "scores.jsonl"))
    full = {"w1": 1.0, "w2": 1.0, "weight_bits": 32}
    results = fq.compare(score, cost_fn, SPACE, (0.0, *cost_fn(full)), budget=8, seeds=[0, 1], n_reference=20,
                         initial_params=[full])
    assert {(r["method"], r["seed"]) for r in results["runs"]} == {(m, s) for m in fq.METHODS for s in (0, 1)}
    assert all(len(r["configs"]) == 8 for r in results["runs"])
    assert all(0 < r["fraction"] <= 1 + 1e-12 for r in results["runs"])
    assert all(0 <= r["fraction_worst_score_ref"] <= 1 + 1e-12 for r in results["runs"])
    assert len(calls) == len({SPACE.key(p) for p in calls}) == results["n_evaluated"]  # each config scored once
    # the exact front of all 48 configurations bounds the reference front from above
    values = np.array([[score_fn(p), *cost_fn(p)] for p in SPACE.iter_all()])
    assert results["reference_hv"] <= fq.front_hypervolume(values, results["ref_point"]) + 1e-12
    assert "qLogNEHVI ahead of Sobol and random" in fq.table(results) and "Diagnostic" in fq.table(results)
    # a second run reads the cache instead of evaluating again
    again = fq.CachedScores(lambda p: pytest.fail("re-evaluated a cached configuration"), SPACE,
                            str(tmp_path / "scores.jsonl"))
    assert len(again.scores) == results["n_evaluated"] == len(again.row_seconds)  # times are cached too


def test_a_bad_cache_row_is_one_clear_error(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps({"params": {"w1": 0.3, "w2": 1.0, "weight_bits": 4}, "score": 0.5}) + "\n")
    with pytest.raises(ValueError, match="row 1 is not a cached score"):
        fq.CachedScores(score_fn, SPACE, str(path))


def test_sobol_and_random_configs_are_distinct_and_feasible():
    space = Space(SPACE.params, constraints=[lambda p: p["weight_bits"] != 4])
    for configs in (fq.sobol_configs(space, 20, 3), fq.random_configs(
            [p for p in space.iter_all() if space.is_feasible(p)], 20, 3)):
        keys = [space.key(p) for p in configs]
        assert len(keys) == 20 == len(set(keys)) and all(p["weight_bits"] != 4 for p in configs)


def test_missing_workdir_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["front_quality", f"--workdir={tmp_path}"])
    assert fq.main() == 2
    assert "config.json not found" in capsys.readouterr().err


def test_reference_sample_is_a_prefix_of_one_permutation():
    feasible = list(SPACE.iter_all())
    small, large, every = (fq.reference_sample(feasible, n, 7) for n in (10, 30, 1000))
    assert large[:10] == small and len(every) == len(feasible)
    assert sorted(SPACE.key(p) for p in every) == sorted(SPACE.key(p) for p in feasible)


def test_sample_seconds_stops_the_sample_and_report_reprints_the_table(tmp_path, capsys, monkeypatch):
    score = fq.CachedScores(score_fn, SPACE, None)
    full = {"w1": 1.0, "w2": 1.0, "weight_bits": 32}
    results = fq.compare(score, cost_fn, SPACE, (0.0, *cost_fn(full)), budget=6, seeds=[0], n_reference=40,
                         initial_params=[full], sample_seconds=0.0)
    assert results["sample_stopped"] and results["n_reference_sample"] == 0
    assert results["n_reference_requested"] == 40 and results["n_new_evaluations"] == results["n_evaluated"]
    assert results["seconds_per_new_evaluation"] >= 0 and all(r["seconds"] >= 0 for r in results["runs"])
    assert "stopped by --sample_seconds after 0 of 40" in fq.table(results)
    (tmp_path / "front_quality").mkdir()
    (tmp_path / "front_quality" / "results.json").write_text(json.dumps(results, default=str))
    monkeypatch.setattr("sys.argv", ["front_quality", f"--workdir={tmp_path}", "--report"])
    assert fq.main() == 0
    assert capsys.readouterr().out.strip() == fq.table(results)
    monkeypatch.setattr("sys.argv", ["front_quality", f"--report={tmp_path / 'front_quality' / 'results.json'}"])
    assert fq.main() == 0
    assert capsys.readouterr().out.strip() == fq.table(results)
    monkeypatch.setattr("sys.argv", ["front_quality", f"--workdir={tmp_path / 'none'}", "--report"])
    assert fq.main() == 2
    assert "results.json not found" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["front_quality", "--report"])
    assert fq.main() == 2
    assert "needs a results.json path or --workdir" in capsys.readouterr().err

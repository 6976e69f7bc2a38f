"""Search records on disk: a damaged evaluations.jsonl line, a cut last line, Pareto ties, JSON without NaN."""

import json
import logging
import math

import numpy as np
import pytest

from effjax.job import json_safe, report
from effjax.search import Objective, Ordinal, Space, optimize
from effjax.search.pareto import non_dominated_mask
from effjax.search.storage import CorruptEvaluations, EVALUATIONS_FILE, read_evaluations


def _search(workdir, budget):
    space = Space([Ordinal("a", [0, 1, 2, 3]), Ordinal("b", [0, 1, 2, 3])])
    objectives = [Objective("f0", "min"), Objective("f1", "min")]
    return optimize(lambda p: {"f0": p["a"] + 0.1 * p["b"], "f1": (3 - p["a"]) + 0.2 * p["b"]}, space, objectives,
                    budget=budget, seed=0, workdir=str(workdir), progress=False, n_initial=3)


def test_corrupt_middle_line_is_refused_naming_file_and_line(tmp_path):
    _search(tmp_path, 4)
    path = tmp_path / EVALUATIONS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"id": 1, "params": {"a": 2, "b"\n'
    path.write_text("".join(lines))
    before = path.read_bytes()
    with pytest.raises(CorruptEvaluations, match=rf"{path} line 2: not valid JSON .*repair or delete that line"):
        _search(tmp_path, 6)
    assert path.read_bytes() == before  # nothing cut, nothing appended


def test_valid_json_that_is_not_a_record_is_refused(tmp_path):
    _search(tmp_path, 3)
    path = tmp_path / EVALUATIONS_FILE
    path.write_text(path.read_text() + "[1, 2]\n")
    with pytest.raises(CorruptEvaluations, match=r"line 4: not an evaluation record"):
        read_evaluations(str(tmp_path))


def test_cut_last_line_is_dropped_and_a_complete_one_kept(tmp_path):
    _search(tmp_path, 3)
    path = tmp_path / EVALUATIONS_FILE
    full = path.read_text()
    path.write_text(full + '{"id": 3, "params": {"a": 1')
    assert len(read_evaluations(str(tmp_path))) == 3 and path.read_text() == full
    last = full.splitlines()[-1]
    path.write_text(full[: -len(last) - 1])  # the last record without its newline
    path.write_text(path.read_text() + last)
    assert len(read_evaluations(str(tmp_path))) == 3 and path.read_text() == full


def test_ties_are_all_non_dominated_and_deduplicate_keeps_one():
    y = np.array([[0.9, -10.0, -5.0], [0.9, -10.0, -5.0], [0.8, -20.0, -5.0], [0.95, -30.0, -8.0]])
    assert non_dominated_mask(y).tolist() == [True, True, False, True]
    assert non_dominated_mask(y, deduplicate=True).tolist() == [True, False, False, True]
    many = np.concatenate([y, -np.abs(np.random.default_rng(0).normal(size=(2000, 3))) - 100])
    assert non_dominated_mask(many)[:4].tolist() == [True, True, False, True]  # the large-n path agrees


def _point(i, score, flops, bits, pareto):
    config = {"encoder_width": 1.0, "decoder_widths": {"digit": 0.5}, "weight_bits": 8, "first_last_bits": 8}
    return {"id": i, "config": config, "metrics": {"score": score, "test_score": score}, "pareto": pareto,
            "cost": {"flops": flops, "bits": bits}}


def test_report_counts_every_tied_front_point():
    class C:
        class data:
            name = "digits"

    points = [_point(0, 0.9, 1e6, 8e4, True), _point(1, 0.9, 1e6, 8e4, True), _point(2, 0.95, 4e6, 2e5, True),
              _point(3, 0.5, 4e6, 2e5, False)]
    text = report.render(points, {"score": 0.96}, C, {})
    assert "3 are Pareto-optimal" in text
    assert "(2 of them tie another front point's score, FLOPs and bits exactly; ties are all flagged and counted)" in text


def test_non_finite_values_become_null_with_a_warning(tmp_path, caplog):
    path = tmp_path / "summary.json"
    with caplog.at_level(logging.WARNING, logger="effjax"):
        json_safe.dump({"metrics": {"test": {"digit": float("nan"), "parity": np.float32(0.5)}}, "loss": [1.0, math.inf]},
                       str(path))
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data == {"metrics": {"test": {"digit": None, "parity": 0.5}}, "loss": [1.0, None]}
    assert "summary.json.metrics.test.digit is nan" in caplog.text and "summary.json.loss[1] is inf" in caplog.text

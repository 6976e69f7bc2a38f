"""The main job end to end at toy scale: train a supernet, search, write outputs, export, reload."""

import dataclasses
import glob
import json
import os
import re

import jax
import numpy as np
import pytest

from effjax.search import reference as search_reference
from effjax.job import run as pipeline
from effjax.compress import export as export_lib
from effjax.config.load import load_config
from effjax.job.export import evaluate_exported, export_from_workdir
from tests.foundation.helpers import REPO


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    parent = str(tmp_path_factory.mktemp("pipeline"))
    config = load_config(os.path.join(REPO, "configs", "pipeline.py") + ":digits,tiny")
    config.log.progress_bar = False
    cwd = os.getcwd()
    os.chdir(parent)  # a workdir given relative to the current directory, as on the command line
    try:
        summary = pipeline.run_main_job(config, "run", devices=jax.devices()[:1])
    finally:
        os.chdir(cwd)
    return os.path.join(parent, "run"), summary


def test_summary_paths_are_absolute_and_report_paths_relative_to_the_workdir(pipeline_run):
    workdir, summary = pipeline_run
    with open(os.path.join(workdir, "summary.json")) as f:
        written = json.load(f)
    paths = [written[k] for k in ("workdir", "tensorboard", "checkpoints", "pareto_json", "pareto_png", "report_md")]
    paths += list(written["exports"].values())
    for path in paths:
        assert os.path.isabs(path) and os.path.exists(path), path
    wall = written["wall_seconds"]  # the phases a user times: training (with its evaluation), the search, the job
    assert set(wall) == {"train", "search", "job"}
    assert 0 < wall["search"] < wall["job"] - wall["train"] and 0 < wall["train"] < wall["job"]
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    exports = re.findall(r"`(export/point_\d+)`", report)
    assert exports and all(os.path.isdir(os.path.join(workdir, e)) for e in exports)
    assert parent_free(report, os.path.dirname(workdir))
    assert search_reference.describe() in report  # the main job passes no reference point: the report says which


def parent_free(text: str, parent: str) -> bool:
    """No absolute path of the machine the run was made on leaks into the text."""
    return parent not in text


def test_outputs_have_the_documented_schema(pipeline_run):
    workdir, summary = pipeline_run
    with open(os.path.join(workdir, "pareto.json")) as f:
        points = json.load(f)["points"]
    assert len(points) == 6 and len({p["id"] for p in points}) == 6
    for p in points:
        assert set(p) >= {"id", "config", "metrics", "cost", "pareto"}
        assert set(p["cost"]) == {"flops", "params", "bits", "bops"}
        assert {"score", "val_digit", "val_parity", "val_ge5"} <= set(p["metrics"])
    assert any(p["pareto"] for p in points)
    front = [p for p in points if p["pareto"]]
    for a in front:  # no front point is dominated by any evaluated point
        for b in points:
            better_or_equal = (b["metrics"]["score"] >= a["metrics"]["score"] and b["cost"]["flops"] <= a["cost"]["flops"]
                               and b["cost"]["bits"] <= a["cost"]["bits"])
            strictly = (b["metrics"]["score"] > a["metrics"]["score"] or b["cost"]["flops"] < a["cost"]["flops"]
                        or b["cost"]["bits"] < a["cost"]["bits"])
            assert not (better_or_equal and strictly)
    for name in ("pareto.png", "report.md", "summary.json", "config.json", "search/evaluations.jsonl"):
        assert os.path.exists(os.path.join(workdir, name)), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(workdir, "tensorboard"))
    acc.Reload()
    assert "search/pareto" in acc.Tags()["images"]
    hv = [e.value for e in acc.Scalars("search/hypervolume")]
    best = [e.value for e in acc.Scalars("search/best_score")]
    assert [e.step for e in acc.Scalars("search/hypervolume")] == list(range(1, len(points) + 1))
    assert all(b >= a for a, b in zip(hv, hv[1:])) and hv[-1] > 0  # adding evaluations never shrinks the front
    np.testing.assert_allclose(best, np.maximum.accumulate([p["metrics"]["score"] for p in sorted(points, key=lambda p: p["id"])]),
                               rtol=1e-6)
    assert {"train/loss", "val/digit/accuracy", "test/ge5/accuracy"} <= set(acc.Tags()["scalars"])
    sessions = [f for f in glob.glob(os.path.join(workdir, "tensorboard", "**", "events.out.*"), recursive=True)
                if os.sep + "hparams" in f]
    assert len(sessions) == 1, sessions  # one hparams session (events file) per run


def test_export_matches_its_pareto_entry_in_accuracy_and_size(pipeline_run):
    workdir, _ = pipeline_run
    with open(os.path.join(workdir, "pareto.json")) as f:
        points = json.load(f)["points"]
    point = next(p for p in points if p["pareto"])
    out = export_from_workdir(workdir, point_id=point["id"], output=os.path.join(workdir, "cli_export"))
    for task in ("digit", "parity", "ge5"):
        assert out["measured_test"][task] == point["metrics"][f"test_{task}"]
    assert out["bin_bytes"] * 8 == out["bits_objective"] == point["cost"]["bits"]


def test_exported_model_predicts_like_the_supernet_at_that_subnet(pipeline_run):
    from effjax.job.subnet_search import SubnetEvaluator
    from effjax.train.setup import load_run

    workdir, _ = pipeline_run
    run = load_run(workdir)
    config, setup = run.config, run.setup
    evaluator = SubnetEvaluator(setup, run.params, {})
    from effjax.subnet import SubnetConfig

    subnet = SubnetConfig(encoder_width=0.5, decoder_widths=(("digit", 0.25), ("ge5", 1.0), ("parity", 0.5)),
                          weight_bits=4, first_last_bits=8)
    plans = evaluator.plan(subnet)
    assert any(p.active_shape != p.full_shape for p in plans)
    directory = os.path.join(workdir, "manual_export")
    pipeline.export_point(evaluator, {"id": -1, "config": subnet.to_dict()}, directory, config)
    exported = export_lib.load(directory)
    images = setup.dataset.splits["val"]["image"][:16]
    reference = setup.model.apply({"params": export_lib.quantized_params(evaluator.host_params, plans)}, images,
                                  subnet=subnet.without_bits())
    got = exported.predict(images)
    for task in reference:
        np.testing.assert_allclose(got[task], np.asarray(reference[task]), rtol=1e-5, atol=1e-6)
    metrics = evaluate_exported(exported, setup.dataset, "val")
    assert metrics["digit"] == pytest.approx(evaluator.metrics(subnet, "val")["digit"])


def test_pareto_json_and_report_carry_test_metrics_for_the_front_and_the_full_config(pipeline_run):
    workdir, summary = pipeline_run
    with open(os.path.join(workdir, "pareto.json")) as f:
        written = json.load(f)
    tasks = ("digit", "parity", "ge5")
    for p in written["points"]:
        assert all(f"val_{t}" in p["metrics"] for t in tasks)
        if p["pareto"]:
            assert all(f"test_{t}" in p["metrics"] for t in tasks) and "test_score" in p["metrics"]
    full = written["full"]
    assert full["config"]["encoder_width"] == 1.0 and full["config"]["weight_bits"] is None
    assert {f"{s}_{t}" for s in ("val", "test") for t in tasks + ("score",)} <= set(full["metrics"])
    assert full["metrics"]["score"] == full["metrics"]["val_score"]  # selection stays on validation
    assert set(full["cost"]) == {"flops", "params", "bits", "bops"}
    assert summary["full_supernet_test_score"] == full["metrics"]["test_score"]
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert f"test score {full['metrics']['test_score']:.4f}" in report
    assert "| full supernet (not selectable) |" in report
    front_rows = [line for line in report.split("## The front")[1].splitlines() if line.startswith("| ")][2:]
    assert all(line.count("|") == 7 for line in front_rows)  # id, config, val, test, MFLOPs, size
    assert "## Compared with training each configuration alone" in report
    assert "supernet_vs_standalone" in report


def test_report_quotes_the_standalone_study_or_says_not_measured(tmp_path):
    from effjax.job.report import standalone_gap

    assert "not measured for digits" in standalone_gap("digits", str(tmp_path / "absent.json"))
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"digits": {"budget_a": {"k": 6, "seeds": 3, "score_gap_mean": -1.25,
                                                        "score_gap_min": -2.5, "score_gap_max": 0.5}}}))
    text = standalone_gap("digits", str(path))
    assert "-1.25" in text and "-2.50" in text and "+0.50" in text and "3 seed(s)" in text
    assert "not measured for shapes" in standalone_gap("shapes", str(path))


def test_standalone_study_marks_the_2x_schedule_target_by_its_fixed_rule():
    from experiments.supernet_vs_standalone.report import targets

    a = {"within_target": False, "score_gap_min": -3.0, "score_gap_max": 0.0, "score_gap_mean": -2.0,
         "supernet_total_flops": 1.0, "standalone_total_flops": 2.0}
    line = lambda twice: [x for x in targets("shapes", {"a": a}, twice) if "2x schedule" in x][0]  # noqa: E731
    assert "**met**" in line({"score_gap_mean": -1.5}) and "-2.00 at 1x, -1.50 at 2x" in line({"score_gap_mean": -1.5})
    assert "**missed**" in line({"score_gap_mean": -2.5})
    assert "not measured" in line(None)


def test_programs_compiled_from_shapes_alone_serve_the_evaluator(pipeline_run):
    from effjax.job import subnet_search as ss
    from effjax.subnet import SubnetConfig
    from effjax.train.setup import load_run

    run = load_run(pipeline_run[0])
    setup, params = run.setup, run.params
    programs = ss.precompile_knob_steps(setup, [0.5])  # before any parameter exists, as the main job does
    assert set(programs) == {0.5}
    early = ss.SubnetEvaluator(setup, params, {}, programs=programs)
    on_demand = ss.SubnetEvaluator(setup, params, {})
    subnet = SubnetConfig(encoder_width=0.5, decoder_widths=(("digit", 0.25), ("ge5", 1.0), ("parity", 0.5)),
                          weight_bits=4, first_last_bits=8)
    assert early.metrics(subnet, "val") == on_demand.metrics(subnet, "val")
    early.precompile([0.5, 1.0])
    assert early._eval_steps[0.5] is programs[0.5] and early.compiled_programs == 2


def test_precompiling_waits_for_its_start_signal(pipeline_run, monkeypatch):
    import concurrent.futures
    import threading

    from effjax.job import subnet_search as ss
    from effjax.train.setup import load_run

    run = load_run(pipeline_run[0])
    start, building = threading.Event(), []
    knob_step = ss.knob_step
    monkeypatch.setattr(ss, "knob_step", lambda *a: building.append(a[1]) or knob_step(*a))
    programs = ss.precompile_knob_steps(run.setup, [0.25], start=start)
    done, _ = concurrent.futures.wait([programs[0.25].future], timeout=1.0)
    assert not done and building == []  # held back while the train step traces: not even traced
    start.set()
    assert programs[0.25].future.result(timeout=300) is not None and building == [0.25]


def test_the_evaluator_scores_each_subnet_and_split_once(pipeline_run, monkeypatch):
    from effjax.job import subnet_search as ss
    from effjax.subnet import SubnetConfig
    from effjax.train.setup import load_run

    run = load_run(pipeline_run[0])
    evaluator = ss.SubnetEvaluator(run.setup, run.params, {})
    runs = []
    evaluate = ss.evaluate
    monkeypatch.setattr(ss, "evaluate", lambda *a, **k: runs.append(a[2]) or evaluate(*a, **k))
    subnet = SubnetConfig(encoder_width=0.5, decoder_widths=(("digit", 0.25), ("ge5", 1.0), ("parity", 0.5)))
    first = evaluator.metrics(subnet, "val")
    first["score"] = -1.0  # the caller's copy
    again = evaluator.metrics(subnet, "val")
    assert runs == ["val"] and again["score"] != -1.0
    evaluator.metrics(subnet, "test")
    evaluator.metrics(dataclasses.replace(subnet, weight_bits=4, first_last_bits=8), "val")
    assert runs == ["val", "test", "val"]

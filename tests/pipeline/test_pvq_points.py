"""PVQ (post-training Pyramid Vector Quantization) as a value of the searched bits menu: zero-shot
evaluation, bits objective and export agree exactly; bad `config.search.pvq` is refused."""

import dataclasses
import json
import os
import types

import flax
import jax
import ml_collections
import numpy as np
import pytest

from effjax.job import run as pipeline
from effjax.job import subnet_search as ss
from effjax.compress import export as export_lib
from effjax.config.load import load_config
from effjax.job.export import evaluate_exported, export_from_workdir
from effjax.quant.pvq import PVQSpec
from effjax.train.trainer import build, init_state
from tests.foundation.helpers import REPO


def _config(arg="digits,tiny,pvq"):
    config = load_config(os.path.join(REPO, "configs", "pipeline.py") + ":" + arg)
    config.log.progress_bar = False
    return config


@pytest.fixture(scope="module")
def trained():
    """A tiny untrained super_vit (random weights suffice: the tests compare evaluation with export)."""
    config = _config()
    setup = build(config, jax.devices()[:1])
    state = init_state(setup, jax.random.PRNGKey(0))
    return ss.SubnetEvaluator(setup, state.params, {}), state


@pytest.fixture(scope="module")
def evaluator(trained):
    return trained[0]


def test_pvq_settings_join_the_bits_menu_ordered_by_bits_per_weight():
    menu = ss.pvq_menu(_config())
    assert list(menu) == ["pvq_L8_K8_b4", "pvq_L8_K13_b4"]
    assert [s.bits_per_weight for s in menu.values()] == [2.75, 3.25]
    assert ss.bits_values((4, 8, 32), menu) == ["pvq_L8_K8_b4", "pvq_L8_K13_b4", 4, 8, 32]
    assert ss.pvq_menu(_config("digits,tiny")) == {}
    params = {"encoder_width": 0.5, "decoder_width_digit": 1.0, "decoder_width_parity": 0.5, "decoder_width_ge5": 0.25,
              "weight_bits": "pvq_L8_K13_b4"}
    subnet = ss.subnet_from_params(params, _tasks())
    assert subnet.weight_bits is None and subnet.first_last_bits == 8
    assert ss.pvq_of(params, menu) == PVQSpec(8, 13, 4, False, 0)
    with pytest.raises(ValueError, match="weight_bits='pvq_L8_K99_b4'"):
        ss.pvq_of({**params, "weight_bits": "pvq_L8_K99_b4"}, menu)


def _tasks():
    from effjax.data import load_dataset

    return load_dataset(_config().data).tasks


@pytest.mark.parametrize("field, value, message", [
    ("group_size", 0, "group_size=0"),
    ("pulses", (8, 0), r"pulses=\(8, 0\)"),
    ("pulses", (8, 8), r"pulses=\(8, 8\)"),
    ("scale_bits", 0, "scale_bits=0"),
    ("scale_bits", 17, "scale_bits=17"),
    ("rotate", "yes", "rotate='yes'"),
    ("hessian", True, r"unknown fields \['hessian'\]"),
    ("pulses", 5000, "2\\^64"),
])
def test_bad_pvq_config_is_refused_before_training(tmp_path, field, value, message):
    config = _config()
    config.search.pvq = ml_collections.ConfigDict({**config.search.pvq.to_dict(), field: value})
    with pytest.raises(ValueError, match=f"config.search.pvq.*{message}"):
        pipeline.run_main_job(config, str(tmp_path), devices=jax.devices()[:1])
    assert not os.listdir(tmp_path)  # refused before writing or training anything


WIDTHS = {"encoder_width": 0.5, "decoder_width_digit": 0.25, "decoder_width_parity": 0.5, "decoder_width_ge5": 1.0}


def test_pvq_point_export_predicts_like_its_zero_shot_evaluation_and_sizes_match(evaluator, tmp_path):
    subnet = ss.subnet_from_params({**WIDTHS, "weight_bits": "pvq_L8_K8_b4"}, evaluator.tasks)
    pvq = PVQSpec(group_size=8, pulses=8, scale_bits=3, rotate=True, seed=1)
    plans = evaluator.plan(subnet, pvq)
    coded = [p for p in plans if p.pvq is not None]
    assert any(p.path.endswith("moe/wi") and len(p.active_shape) == 3 for p in coded)  # expert kernels too
    assert any(p.active_shape != p.full_shape for p in coded)
    assert all(export_lib.layer_group(p.path) not in ("embed", "head") for p in coded)
    assert {p.bits for p in plans if export_lib.layer_group(p.path) in ("embed", "head") and p.path.endswith("kernel")} == {8}

    evaluated = export_lib.quantized_params(evaluator.host_params, plans, evaluator.pvq_cache)
    flat_eval = flax.traverse_util.flatten_dict(evaluated, sep="/")
    flat_float = flax.traverse_util.flatten_dict(evaluator.host_params, sep="/")
    for p in coded:  # the active slice is coded (not the float weights), the rest is zero
        active = tuple(slice(0, s) for s in p.active_shape)
        assert not np.allclose(flat_eval[p.path][active], flat_float[p.path][active])
        assert np.count_nonzero(flat_eval[p.path]) <= np.prod(p.active_shape)
    # the bits objective is exactly the PVQ codes (+ codebooks) of the active slices plus the rest as written
    storage = sum(m.storage_bits for p in coded for m in export_lib.pvq_matrices(flat_float, p, evaluator.pvq_cache))
    assert storage == sum(export_lib.plan_bits(p) for p in coded)

    directory = str(tmp_path / "pvq_export")
    meta = pipeline.export_point(evaluator, {"id": -1, "config": subnet.to_dict(), "pvq": ss.pvq_dict(pvq)},
                                 directory, evaluator.setup.config)
    cost = evaluator.cost(subnet, pvq)
    assert meta["bin_bytes"] * 8 == meta["payload_bits"] == cost["bits"]
    assert os.path.getsize(os.path.join(directory, "model.bin")) * 8 == cost["bits"]
    assert cost["bits"] < evaluator.cost(dataclasses.replace(subnet, weight_bits=4))["bits"]
    with open(os.path.join(directory, "model.json")) as f:
        written = json.load(f)
    assert written["format_version"] == export_lib.FORMAT_VERSION
    assert any(a["name"].endswith(":pvq_index") and a["dtype"] == "u1" for a in written["arrays"])

    exported = export_lib.load(directory)  # no supernet: model.json + model.bin only
    flat_loaded = flax.traverse_util.flatten_dict(exported.params, sep="/")
    for p in coded:  # the decoded kernels, at their true widths, are bit for bit the ones zero-shot evaluation used
        assert flat_loaded[p.path].shape == p.active_shape
        np.testing.assert_array_equal(flat_loaded[p.path], flat_eval[p.path][tuple(slice(0, s) for s in p.active_shape)])
    images = evaluator.setup.dataset.splits["val"]["image"][:32]
    reference = evaluator.setup.model.apply({"params": evaluated}, images, subnet=subnet.without_bits())
    got = exported.predict(images)  # jit vs eager: float rounding differences only
    for task in reference:
        np.testing.assert_allclose(got[task], np.asarray(reference[task]), rtol=1e-5, atol=1e-6)
    metrics = evaluate_exported(exported, evaluator.setup.dataset, "val")
    zero_shot = evaluator.metrics(subnet, "val", pvq)
    for task in ("digit", "parity", "ge5"):
        assert metrics[task] == zero_shot[task]


def test_integer_exports_of_format_version_1_still_load(evaluator, tmp_path):
    subnet = ss.subnet_from_params({**WIDTHS, "weight_bits": 4}, evaluator.tasks)
    directory = str(tmp_path / "v1")
    pipeline.export_point(evaluator, {"id": -1, "config": subnet.to_dict()}, directory, evaluator.setup.config)
    path = os.path.join(directory, "model.json")
    with open(path) as f:
        meta = json.load(f)
    meta["format_version"] = 1
    with open(path, "w") as f:
        json.dump(meta, f)
    loaded = flax.traverse_util.flatten_dict(export_lib.load(directory).params, sep="/")
    plans = evaluator.plan(subnet)
    evaluated = flax.traverse_util.flatten_dict(export_lib.quantized_params(evaluator.host_params, plans), sep="/")
    for p in plans:
        active = tuple(slice(0, s) for s in p.active_shape)
        np.testing.assert_array_equal(loaded[p.path][active], evaluated[p.path][active])


@pytest.fixture(scope="module")
def pvq_workdir(trained, tmp_path_factory):
    """A pipeline workdir (config.json, checkpoint, pareto.json from `pareto_points`) without training or search:
    two evaluated points of the same widths, int8 and PVQ (the PVQ one has the fewest bits, so it is on the front)."""
    from effjax.train.checkpoint import Checkpointer

    evaluator, state = trained
    workdir = str(tmp_path_factory.mktemp("pvq_workdir"))
    config = evaluator.setup.config
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1, async_save=False)
    ckpt.save(0, state, wait=True)
    ckpt.close()
    history = []
    for i, bits in enumerate((8, "pvq_L8_K8_b4")):
        params = {**WIDTHS, "weight_bits": bits}
        subnet, pvq = evaluator.candidate(params)
        values = {"score": evaluator.metrics(subnet, "val", pvq)["score"], **evaluator.cost(subnet, pvq)}
        history.append(types.SimpleNamespace(id=i, params=params, values=values))
    points = ss.pareto_points(evaluator, types.SimpleNamespace(history=history))
    ss.write_pareto_json(points, os.path.join(workdir, "pareto.json"))
    return workdir, points


def test_cli_export_of_a_pvq_point_matches_its_pareto_entry(pvq_workdir):
    workdir, points = pvq_workdir
    point = points[1]
    assert point["pvq"] == {"group_size": 8, "pulses": 8, "scale_bits": 4, "rotate": False, "seed": 0,
                            "bits_per_weight": 2.75}
    assert points[0]["pvq"] is None and point["pareto"] and point["cost"]["bits"] < points[0]["cost"]["bits"]
    assert point["cost"]["flops"] == points[0]["cost"]["flops"] and point["cost"]["bops"] > points[0]["cost"]["bops"]
    out = export_from_workdir(workdir, point_id=point["id"], output=os.path.join(workdir, "pvq_cli_export"))
    for task in ("digit", "parity", "ge5"):
        assert out["measured_test"][task] == point["metrics"][f"test_{task}"]
    assert out["bin_bytes"] * 8 == out["bits_objective"] == point["cost"]["bits"]
    with open(os.path.join(out["directory"], "model.json")) as f:
        assert any(p["bits"] == "pvq" for p in json.load(f)["params"])


@pytest.fixture(scope="module")
def pvq_pipeline_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pvq_pipeline"))
    config = _config()
    config.search.bits = (8,)
    pipeline.run_main_job(config, workdir, devices=jax.devices()[:1])
    with open(os.path.join(workdir, "pareto.json")) as f:
        return workdir, json.load(f)["points"]


@pytest.mark.slow
def test_pipeline_searches_pvq_points_and_exports_one(pvq_pipeline_run):
    """Train -> search (mixed integer / PVQ `weight_bits` Ordinal) -> CLI export of a PVQ front point."""
    workdir, points = pvq_pipeline_run
    pvq_points = [p for p in points if p["pvq"] is not None]
    assert pvq_points and all(isinstance(p["params"]["weight_bits"], str) for p in pvq_points)
    assert all(p["pvq"] is None and p["params"]["weight_bits"] == 8 for p in points if p not in pvq_points)
    point = next(p for p in pvq_points if p["pareto"])
    out = export_from_workdir(workdir, point_id=point["id"], output=os.path.join(workdir, "pvq_cli_export"))
    for task in ("digit", "parity", "ge5"):
        assert out["measured_test"][task] == point["metrics"][f"test_{task}"]
    assert out["bin_bytes"] * 8 == out["bits_objective"] == point["cost"]["bits"]

"""PVQ post-training quantization of a tiny trained quickstart ViT (effjax/quant/pvq_model.py, tools/pvq_ptq.py)."""

import math
import os

import flax
import jax
import numpy as np
import pytest

from effjax.config.load import load_config
from effjax.job.run import run_main_job
from effjax.quant import pvq_model
from effjax.quant.pvq import num_codewords
from effjax.quant.pvq.ptq import kernel_paths
from effjax.train.setup import load_run
from tools import pvq_ptq

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
L, K, B_S = 8, 12, 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/quickstart.py:tiny trained by the launcher's job (20 steps), its workdir and its Setup."""
    config = load_config(os.path.join(REPO, "configs", "quickstart.py") + ":tiny")
    config.log.progress_bar = False
    config.checkpoint.async_save = False
    workdir = str(tmp_path_factory.mktemp("quickstart_tiny"))
    run_main_job(config, workdir, devices=jax.devices()[:1])
    run = load_run(workdir)
    run.params = jax.tree.map(np.asarray, run.params)
    return workdir, run, run.setup


@pytest.fixture(scope="module")
def ptq_result(trained, tmp_path_factory):
    workdir, _, _ = trained
    output = str(tmp_path_factory.mktemp("pvq_out"))
    config = {"group_size": L, "pulses": K, "scale_bits": B_S, "eval_splits": ("val",)}
    return pvq_model.run_pvq_ptq(workdir, config, output, devices=jax.devices()[:1])


def _flat(tree):
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def _expected_bits(shape, group_size, pulses, scale_bits):
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    groups = math.ceil(rows / group_size) * cols
    per_group = math.ceil(math.log2(num_codewords(group_size, pulses))) + scale_bits
    return groups, groups * per_group / (rows * cols)


def test_metrics_for_every_task_and_kernels_changed(trained, ptq_result):
    _, run, setup = trained
    metrics = ptq_result["metrics"]["val"]
    assert set(metrics) == {t.name for t in setup.dataset.tasks} == {"digit", "parity", "ge5"}
    for name, m in metrics.items():
        assert 0.0 <= m["float"] <= 1.0 and 0.0 <= m["pvq"] <= 1.0, (name, m)
        assert m["retained"] == pytest.approx(m["pvq"] / m["float"])
    reloaded = _flat(pvq_model.load_pvq_params(ptq_result["output_dir"]))
    original = _flat(run.params)
    assert set(reloaded) == set(original)
    kernels = set(kernel_paths(run.params))
    assert kernels == set(ptq_result["layers"]) and len(kernels) == 19
    for path, value in original.items():
        if path in kernels:
            assert reloaded[path].shape == value.shape and reloaded[path].dtype == value.dtype
            assert not np.allclose(reloaded[path], value, rtol=0, atol=1e-6), path
            error = np.linalg.norm(reloaded[path] - value) / np.linalg.norm(value)
            assert error < 0.5, (path, error)
        else:
            np.testing.assert_array_equal(reloaded[path], value)


def test_bits_per_weight_is_the_pvq_formula(trained, ptq_result):
    _, run, _ = trained
    assert math.ceil(math.log2(num_codewords(L, K))) == 22
    total_bits = total_weights = 0
    for path, entry in ptq_result["layers"].items():
        shape = entry["shape"]
        _, bits = _expected_bits(shape, L, K, B_S)
        assert entry["bits_per_weight"] == pytest.approx(bits), path
        if shape[0] % L == 0:
            assert entry["bits_per_weight"] == pytest.approx((22 + B_S) / L), path
        total_bits += bits * np.prod(shape)
        total_weights += np.prod(shape)
    assert ptq_result["layers"]["embedding/patch_embed/kernel"]["shape"][0] == 4  # 2x2x1 patches: padded to one group of 8
    assert ptq_result["layers"]["embedding/patch_embed/kernel"]["bits_per_weight"] == pytest.approx(2 * (22 + B_S) / L)
    assert ptq_result["kernel_bits_per_weight"] == pytest.approx(total_bits / total_weights)
    assert ptq_result["quantized_weights"] == total_weights


def test_packed_size_matches_layout(trained, ptq_result):
    _, run, _ = trained
    sizes = ptq_result["sizes"]
    kernels_file = os.path.join(ptq_result["output_dir"], pvq_model.KERNELS_FILE)
    assert os.path.getsize(kernels_file) == sizes["kernels"]["file_bytes"]
    code_bytes = 0
    for entry in ptq_result["layers"].values():
        groups, _ = _expected_bits(entry["shape"], L, K, B_S)
        code_bytes += math.ceil(groups * 22 / 8) + math.ceil(groups * B_S / 8)
    codebook_bytes = 4 * 2**B_S * len(ptq_result["layers"])
    assert sizes["kernels"]["code_bytes"] == code_bytes
    assert sizes["kernels"]["codebook_bytes"] == codebook_bytes
    assert sizes["kernels"]["file_bytes"] == code_bytes + codebook_bytes + sizes["kernels"]["header_bytes"]
    float_leaves = {p: v for p, v in _flat(run.params).items() if p not in ptq_result["layers"]}
    assert sizes["float_param_bytes"] == sum(v.nbytes for v in float_leaves.values())
    assert sizes["pvq_model_bytes"] == sizes["kernels"]["file_bytes"] + sizes["float_param_bytes"]
    assert sizes["float32_model_bytes"] == 4 * sizes["total_params"]
    assert sizes["pvq_model_bytes"] < sizes["float32_model_bytes"] / 3


def test_reload_equals_in_memory_quantization(trained, ptq_result):
    _, run, setup = trained
    config = {"group_size": L, "pulses": K, "scale_bits": B_S}
    in_memory = _flat(pvq_model.quantize_model(setup.model, run.params, setup.dataset, config).params)
    reloaded = _flat(pvq_model.load_pvq_params(ptq_result["output_dir"]))
    for path, value in in_memory.items():
        np.testing.assert_array_equal(np.asarray(value).reshape(reloaded[path].shape), reloaded[path], err_msg=path)


def test_hessian_path_runs_and_lowers_calibration_output_error(trained):
    _, run, setup = trained
    base = {"group_size": L, "pulses": K, "scale_bits": B_S, "calibration_examples": 64}
    hessian = pvq_model.quantize_model(setup.model, run.params, setup.dataset, {**base, "hessian": True})
    plain = pvq_model.quantize_model(setup.model, run.params, setup.dataset, base)
    inputs = hessian.calibration
    assert all(x.shape[0] == 64 * (17 if "attention" in p or "mlp" in p else 16 if "patch" in p else 1)
               for p, x in inputs.items())
    assert set(inputs) == set(hessian.report["layers"])
    original, q_plain, q_hessian = _flat(run.params), _flat(plain.params), _flat(hessian.params)
    gains = []
    for path, entry in hessian.report["layers"].items():
        assert entry["hessian_aware"] and np.isfinite(entry["output_sqnr_db"]), path
        x, w = inputs[path], original[path]
        plain_error = np.linalg.norm(x @ (q_plain[path] - w))
        hessian_error = np.linalg.norm(x @ (q_hessian[path] - w))
        assert entry["output_sqnr_db"] == pytest.approx(20 * np.log10(np.linalg.norm(x @ w) / hessian_error), abs=1e-3)
        gains.append(20 * np.log10(plain_error / hessian_error))
    assert np.mean(gains) > 1.0, gains  # on the calibration inputs H was built from


def test_sequential_hessian_path_uses_quantized_inputs(trained):
    _, run, setup = trained
    config = {"group_size": L, "pulses": K, "scale_bits": B_S, "calibration_examples": 16, "hessian": True,
              "calibration_inputs": "quantized"}
    sequential = pvq_model.quantize_model(setup.model, run.params, setup.dataset, config)
    layers = sequential.report["layers"]
    assert set(layers) == set(kernel_paths(run.params)) and all(e["hessian_aware"] for e in layers.values())
    assert sequential.report["bits_per_weight"] == pytest.approx(
        sum(e["bits_per_weight"] * np.prod(e["shape"]) for e in layers.values()) / sum(np.prod(e["shape"]) for e in layers.values()))
    images = pvq_model.calibration_images(setup.dataset, "train", 16)
    float_inputs = pvq_model.collect_layer_inputs(setup.model, run.params, images)
    # the first layer sees the images either way; later layers see the partly quantized network's activations
    np.testing.assert_array_equal(sequential.calibration["embedding/patch_embed/kernel"], float_inputs["embedding/patch_embed/kernel"])
    assert not np.allclose(sequential.calibration["blocks_1/mlp/wo/kernel"], float_inputs["blocks_1/mlp/wo/kernel"])
    # the model built layer by layer is what the recorded codes decode to
    from effjax.quant.pvq import dequantize_matrix
    flat = _flat(sequential.params)
    for path, coded in sequential.quantized.items():
        np.testing.assert_array_equal(dequantize_matrix(coded).reshape(flat[path].shape), flat[path])


def test_layer_inputs_are_what_each_dense_sees(trained):
    _, run, setup = trained
    images = setup.dataset.splits["val"]["image"][:5]
    inputs = pvq_model.collect_layer_inputs(setup.model, run.params, images, batch_size=3)
    patches = images.reshape(5, 4, 2, 4, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(5 * 16, 4)
    np.testing.assert_allclose(inputs["embedding/patch_embed/kernel"], patches, rtol=1e-6)
    assert inputs["heads_digit/out/kernel"].shape == (5, 32)  # class token only
    assert inputs["blocks_0/mlp/wo/kernel"].shape == (5 * 17, 64)  # 16 patches + class token


def test_first_last_layers_float_or_own_pulses(trained):
    _, run, setup = trained
    special = {"embedding/patch_embed/kernel", "heads_digit/out/kernel", "heads_parity/out/kernel", "heads_ge5/out/kernel"}
    kept = pvq_model.quantize_model(setup.model, run.params, setup.dataset, {"pulses": K, "keep_first_last_float": True})
    assert special.isdisjoint(kept.report["layers"]) and len(kept.report["layers"]) == 15
    original, flat = _flat(run.params), _flat(kept.params)
    for path in special:
        np.testing.assert_array_equal(flat[path], original[path])
    higher = pvq_model.quantize_model(setup.model, run.params, setup.dataset, {"pulses": K, "first_last_pulses": 20})
    for path, entry in higher.report["layers"].items():
        assert entry["pulses"] == (20 if path in special else K), path


def test_bad_config_and_workdir_raise_one_line_errors(trained, tmp_path):
    _, run, _ = trained
    with pytest.raises(ValueError, match="config.pvq: unknown fields"):
        pvq_model.merged_pvq_config({"puls": 3})
    with pytest.raises(ValueError, match="config.pvq.first_layers"):
        pvq_model.pvq_ptq_config({"keep_first_last_float": True, "first_layers": "no_such_layer"}, run.params)
    with pytest.raises(ValueError, match="not both"):
        pvq_model.merged_pvq_config({"keep_first_last_float": True, "first_last_pulses": 20})
    with pytest.raises(ValueError, match="calibration_inputs"):
        pvq_model.merged_pvq_config({"calibration_inputs": "sequential"})
    with pytest.raises(ValueError, match="no config.json"):
        load_run(str(tmp_path))


def test_cli_flags_and_report(ptq_result):
    args = pvq_ptq.parse_args(["--workdir=/x", "--pulses=13", "--hessian", "--calibration_inputs=quantized", "--splits=val,test"])
    assert pvq_ptq.pvq_overrides(args) == {"pulses": 13, "hessian": True, "calibration_inputs": "quantized",
                                           "eval_splits": ("val", "test")}
    text = pvq_ptq.format_result(ptq_result)
    assert "| digit | accuracy |" in text and "bits/weight" in text
    assert f"{ptq_result['kernel_bits_per_weight']:.4f} bits/weight" in text
    assert str(ptq_result["sizes"]["kernels"]["file_bytes"]) in text

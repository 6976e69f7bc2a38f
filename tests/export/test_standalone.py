"""The standalone export: true-width weights at their exported precision inside a jax.export artifact
that computes what effjax computes, with the cost model's FLOPs and a signature that says what it takes."""

import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from effjax.compress import artifacts
from effjax.compress import export as export_lib
from effjax.compress import standalone


def _meta(directory):
    with open(os.path.join(directory, "model.json")) as f:
        return json.load(f)


def _artifact(directory):
    with open(os.path.join(directory, artifacts.ARTIFACT), "rb") as f:
        return f.read()


def test_loaded_parameters_have_the_subnets_true_widths(evaluator, subnet, exported_dir):
    loaded = flax.traverse_util.flatten_dict(export_lib.load(exported_dir).params, sep="/")
    plans = evaluator.plan(subnet)
    assert {p.path for p in plans} == set(loaded)
    for p in plans:
        assert loaded[p.path].shape == p.active_shape, p.path
    full = sum(int(np.prod(p.full_shape)) for p in plans)
    active = sum(int(np.prod(v.shape)) for v in loaded.values())
    assert active == _meta(exported_dir)["standalone"]["params"]
    assert active < 0.5 * full  # encoder width 0.5: the export is not the supernet's size


def test_predict_computes_what_the_supernet_computes_at_that_subnet(evaluator, subnet, exported_dir):
    images = evaluator.setup.dataset.splits["val"]["image"][:32]
    plans = evaluator.plan(subnet)
    apply = jax.jit(lambda p, x: evaluator.setup.model.apply({"params": p}, x, subnet=subnet.without_bits()))
    reference = apply(export_lib.quantized_params(evaluator.host_params, plans), images)
    got = export_lib.load(exported_dir).predict(images)
    for task in reference:
        np.testing.assert_allclose(got[task], np.asarray(reference[task]), rtol=1e-5, atol=1e-5)


def test_artifact_has_a_symbolic_batch_and_equals_predict(evaluator, exported_dir):
    model = export_lib.load(exported_dir)
    exported = jax.export.deserialize(bytearray(_artifact(exported_dir)))
    assert str(exported.in_avals[0].shape[0]) == "b" and tuple(exported.in_avals[0].shape[1:]) == (8, 8, 1)
    assert set(exported.platforms) == set(artifacts.PLATFORMS)
    test = evaluator.setup.dataset.splits["test"]["image"]
    for batch in (test[:1], test):
        got, want = exported.call(batch), model.predict(batch)
        for task in want:
            np.testing.assert_allclose(np.asarray(got[task]), want[task], rtol=1e-6, atol=1e-6)


def test_artifact_holds_integer_codes_and_no_padding(exported_dir):
    meta = _meta(exported_dir)
    assert meta["standalone"]["padded_params"] == []
    text = jax.export.deserialize(bytearray(_artifact(exported_dir))).mlir_module()
    assert "stablehlo.pad" not in text
    bits = {p["bits"] for p in meta["params"]}
    assert bits == {4, 8, 32}
    assert "xi8>" in text and "xui8>" in text  # int8 codes and packed int4 codes are constants of the graph
    # no float32 constant as large as a kernel stored as codes: the codes are dequantized in the graph
    largest_float = max((int(np.prod(p["active_shape"])) for p in meta["params"] if p["bits"] == 32), default=0)
    largest_code = max(int(np.prod(p["active_shape"])) for p in meta["params"] if p["bits"] in (4, 8))
    assert largest_code > largest_float


def test_flops_are_the_cost_models_and_match_xla_on_the_artifact(evaluator, subnet, exported_dir):
    meta = _meta(exported_dir)["standalone"]
    assert meta["flops_per_example"] == evaluator.cost(subnet)["flops"]
    images = np.zeros((1,) + evaluator.setup.dataset.image_shape, np.float32)
    padded = export_lib.quantized_params(evaluator.host_params, evaluator.plan(subnet))
    compiled = jax.jit(lambda p, x: evaluator.setup.model.apply({"params": p}, x, subnet=subnet.without_bits())).lower(
        padded, images).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    # nothing for padding or decoding: no more than the supernet computes at that subnet (XLA folds more of
    # the constant-weight graph: 257,341 vs 274,197 here)
    assert meta["xla_flops_per_example"] <= analysis["flops"]
    assert meta["xla_flops_per_example"] == standalone.xla_flops_per_example(_artifact(exported_dir), (8, 8, 1))
    assert meta["flops_per_example"] == pytest.approx(meta["xla_flops_per_example"], rel=0.10)


def test_the_analysis_only_compile_counts_what_the_default_compile_counts(exported_dir):
    exported = jax.export.deserialize(bytearray(_artifact(exported_dir)))
    lowered = jax.jit(exported.call).lower(jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32))
    production = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False}  # XLA's defaults
    analysis = lowered.compile(compiler_options=production).cost_analysis()  # (the test session compiles at level 0)
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    assert standalone.xla_flops_per_example(_artifact(exported_dir), (8, 8, 1)) == analysis["flops"]


def test_signature_says_what_the_model_takes_and_returns(exported_dir):
    meta = _meta(exported_dir)
    sig = meta["signature"]
    assert sig["input"]["shape"] == [None, 8, 8, 1] and sig["input"]["dtype"] == "float32"
    assert sig["input"]["value_range"] == [0.0, 1.0] and "divided by 16" in sig["input"]["preprocessing"]
    outputs = {o["task"]: o for o in sig["outputs"]}
    assert outputs["digit"]["shape"] == [None, 10] and outputs["digit"]["labels"] == [str(d) for d in range(10)]
    assert outputs["parity"]["labels"] == ["even", "odd"] and "argmax" in outputs["parity"]["reading"]
    assert meta["dataset"] == {"name": "digits", "split_sizes": {"train": 1197, "val": 300, "test": 300}}


def test_safetensors_hold_the_arrays_of_model_bin(exported_dir):
    from safetensors.numpy import load_file

    meta = _meta(exported_dir)
    tensors = load_file(os.path.join(exported_dir, artifacts.SAFETENSORS))
    arrays = export_lib.read_arrays(exported_dir, meta["arrays"], meta["bin_sha256"])
    assert set(tensors) == set(arrays)
    for name, array in arrays.items():
        assert tensors[name].dtype == array.dtype and tensors[name].shape == array.shape
        np.testing.assert_array_equal(tensors[name], array)


def jax_only_python() -> str:
    """A cached venv with only jax and flatbuffers (created on first use: this installs from the registry)."""
    venv = os.environ.get("EFFJAX_JAX_ONLY_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "effjax", f"jax-only-py{sys.version_info.major}.{sys.version_info.minor}")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "jax", "flatbuffers"], check=True)
    return python


@pytest.mark.slow
def test_artifact_runs_in_a_venv_with_only_jax(evaluator, exported_dir, tmp_path):
    python = jax_only_python()
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert "jax" in installed and not installed & {"effjax", "flax", "optax", "ml-collections"}
    images = evaluator.setup.dataset.splits["test"]["image"]
    np.save(tmp_path / "images.npy", images)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_artifact.py")
    subprocess.run([python, script, exported_dir, str(tmp_path / "images.npy"), str(tmp_path / "out.npz")], check=True,
                   cwd=str(tmp_path), env={"PATH": os.environ.get("PATH", ""), "JAX_PLATFORMS": "cpu"})
    got = np.load(tmp_path / "out.npz")
    want = export_lib.load(exported_dir).predict(images)
    for task in want:
        np.testing.assert_allclose(got[task], want[task], rtol=1e-5, atol=1e-5)
        assert (got[task].argmax(-1) == want[task].argmax(-1)).all()

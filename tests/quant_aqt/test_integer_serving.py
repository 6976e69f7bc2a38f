"""Integer serving of an export: int8 x int8 -> int32 matmuls on the export's own codes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import export as export_lib
from effjax.subnet import SubnetConfig
from effjax.models import build_model
from effjax.quant import integer_serving as ints
from tests.slim.conftest import digits, init_params, model_config  # noqa: F401  (fixture)

SUBNETS = {
    "int8": SubnetConfig(0.75, (("digit", 0.5),), weight_bits=8, first_last_bits=8),
    "int4": SubnetConfig(1.0, weight_bits=4, first_last_bits=8),
}


@pytest.fixture(scope="module", params=sorted(SUBNETS))
def exported(request, digits, tmp_path_factory):  # noqa: F811
    subnet = SUBNETS[request.param]
    mc = model_config(hidden_dim=32, num_heads=4, mlp_dim=64, decoder_dim=32, patch_size=2,
                      width_menu=(0.25, 0.5, 0.75, 1.0))
    model = build_model(mc, digits.tasks)
    images = np.asarray(digits.splits["val"]["image"][:64])
    params = init_params(model, images)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images[:1])["params"])
    directory = str(tmp_path_factory.mktemp(request.param))
    export_lib.write(directory, jax.tree.map(np.asarray, params), export_lib.plan(boxed, mc, digits.tasks, subnet),
                     {"model_config": mc.to_dict(), "tasks": [dataclasses.asdict(t) for t in digits.tasks],
                      "subnet": subnet.to_dict()})
    return directory, images


def test_every_integer_kernel_is_served_as_int8_codes_with_column_scales(exported):
    directory, _ = exported
    served = ints.IntegerExportedModel(directory)
    integer_paths = {p["path"] for p in served.exported.meta["params"] if p["bits"] in (4, 8)}
    assert integer_paths and set(served.integer_kernels()) == integer_paths
    bits = {p["path"]: p["bits"] for p in served.exported.meta["params"]}
    for path, codes in served.integer_kernels().items():
        qmax = 2 ** (bits[path] - 1) - 1
        assert np.abs(np.asarray(codes)).max() <= qmax
    hlo = served._apply.lower(served.variables, np.zeros((2, 8, 8, 1), np.float32)).as_text()
    assert "xi8>" in hlo and "-> tensor<" in hlo and "i32" in hlo  # int8 operands, int32 accumulation


def test_integer_path_equals_its_float_simulation(exported):
    """Integer accumulation is exact: the int32 path equals the same formula computed in float64-grade float."""
    directory, images = exported
    got = ints.IntegerExportedModel(directory).predict(images)
    simulated = ints.IntegerExportedModel(directory, simulate=True).predict(images)
    for task in got:
        np.testing.assert_allclose(got[task], simulated[task], rtol=1e-4, atol=1e-4, err_msg=task)


def test_integer_attention_einsums_equal_their_float_simulation(exported):
    directory, images = exported
    got = ints.IntegerExportedModel(directory, attention_scores=True).predict(images)
    simulated = ints.IntegerExportedModel(directory, simulate=True, attention_scores=True).predict(images)
    plain = ints.IntegerExportedModel(directory).predict(images)
    for task in got:
        np.testing.assert_allclose(got[task], simulated[task], rtol=1e-4, atol=1e-4, err_msg=task)
        assert not np.allclose(got[task], plain[task], rtol=0, atol=1e-7), task  # the einsums really were rounded


def test_activation_dot_lays_out_both_scales_for_any_dimension_numbers():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 3, 5, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 3, 6, 4)), jnp.float32)
    dims = (((3,), (3,)), ((0, 1), (0, 1)))
    exact = jax.lax.dot_general(q, k, dims)
    got = ints.integer_activation_dot(8)(q, k, dims)
    np.testing.assert_allclose(np.asarray(got), np.asarray(exact), atol=0.05)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ints.integer_activation_dot(8, simulate=True)(q, k, dims)),
                               rtol=1e-5, atol=1e-5)


def test_outputs_agree_with_predict_within_activation_rounding(exported):
    directory, images = exported
    reference = export_lib.load(directory).predict(images)
    got = ints.IntegerExportedModel(directory).predict(images)
    for task in reference:
        ref, out = np.asarray(reference[task], np.float64), np.asarray(got[task], np.float64)
        # 8-bit per-token activations: relative rounding <= 2^-8 per matmul input; a few layers deep
        assert np.linalg.norm(out - ref) <= 0.05 * np.linalg.norm(ref), task
        assert np.mean(out.argmax(-1) == ref.argmax(-1)) >= 0.95, task
        assert not np.allclose(out, ref, rtol=0, atol=1e-7), task  # activations really were rounded


def test_quantize_rows_is_symmetric_round_to_nearest_per_row():
    x = jnp.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    q, s = ints.quantize_rows(x, 8)
    np.testing.assert_allclose(np.asarray(s[:, 0]), [2.0 / 127, 1.0])
    np.testing.assert_array_equal(np.asarray(q), [[64, -127, 32], [0, 0, 0]])


def test_float_only_export_is_one_clear_error(digits, tmp_path):  # noqa: F811
    mc = model_config(patch_size=2)
    model = build_model(mc, digits.tasks)
    images = np.asarray(digits.splits["val"]["image"][:2])
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images[:1])["params"])
    params = init_params(model, images)
    subnet = SubnetConfig()
    export_lib.write(str(tmp_path), jax.tree.map(np.asarray, params), export_lib.plan(boxed, mc, digits.tasks, subnet),
                     {"model_config": mc.to_dict(), "tasks": [dataclasses.asdict(t) for t in digits.tasks],
                      "subnet": subnet.to_dict()})
    with pytest.raises(ValueError, match="no integer kernels"):
        ints.IntegerExportedModel(str(tmp_path))

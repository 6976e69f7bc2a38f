"""TRAIN -> CONVERT -> SERVE: served outputs, integer parameter tree, checkpoint bytes on disk."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress.cost_elastic import elastic_cost
from effjax.quant import rtn, serving
from effjax.quant.aqt_config import QUANT_COLLECTION
from effjax.subnet import SubnetConfig
from tests.quant_aqt.helpers import DIGIT_TASKS, IMAGE_SHAPE, images, init_params, tiny_model_config

RNG = {"params": jax.random.PRNGKey(0)}
SUBNETS = {
    "int8": SubnetConfig(weight_bits=8, activation_bits=8, first_last_bits=8),
    "int4": SubnetConfig(weight_bits=4, activation_bits=4, first_last_bits=8),
}


@pytest.fixture(scope="module", params=sorted(SUBNETS))
def converted(request):
    subnet = SUBNETS[request.param]
    mc = tiny_model_config(hidden=32, layers=1)
    q_model = serving.quantized_model(mc, DIGIT_TASKS, subnet)
    params = init_params(q_model, seed=1)
    served = serving.convert(mc, DIGIT_TASKS, IMAGE_SHAPE, params, subnet)
    return mc, subnet, q_model, params, served


def test_served_outputs_equal_quantized_eval_outputs(converted):
    _, _, q_model, params, served = converted
    x = images(16, seed=3)
    expected = jax.jit(lambda p, x: q_model.apply({"params": p}, x, rngs=RNG))(params, x)
    got = served(x)
    for task in expected:
        np.testing.assert_array_equal(np.asarray(got[task]), np.asarray(expected[task]))


def test_served_tree_holds_integers_and_no_replaced_float_kernels(converted):
    _, subnet, _, params, served = converted
    ints = served.integer_leaves()
    kernels = {p for p in flax.traverse_util.flatten_dict(params) if p[-1] == "kernel"}
    assert len(ints) == len(kernels) > 0
    body_dtype = jnp.int8 if subnet.weight_bits == 8 else jnp.int4
    for path, q in ints.items():
        first_or_last = path.startswith(("embedding/patch_embed/", "heads_"))
        assert q.dtype == (jnp.int8 if first_or_last else body_dtype), path
    kept = flax.traverse_util.flatten_dict(served.variables["params"])
    assert not any(p[-1] == "kernel" for p in kept)  # every kernel was replaced by integers
    assert set(served.dropped) == kernels
    assert all(jnp.issubdtype(v.dtype, jnp.floating) for v in kept.values())  # biases, LayerNorms, embeddings


def test_integer_values_match_the_float_kernels(converted):
    """Each stored integer times its per-channel scale is the kernel rounded to the grid (|error| <= scale / 2)."""
    _, _, _, params, served = converted
    flat_params = flax.traverse_util.flatten_dict(params, sep="/")
    frozen = flax.traverse_util.flatten_dict(serving._plain_aqt(served.variables[QUANT_COLLECTION]), sep="/")
    for path, q in served.integer_leaves().items():
        module = path.split("/AqtDotGeneral_0/")[0]
        kernel = np.asarray(flat_params[module + "/kernel"])
        scale = np.asarray(frozen[path[: -len("qvalue")] + "scale"])
        err = np.abs(np.asarray(q).astype(np.float32) * scale - kernel)
        assert np.all(err <= scale / 2 + 1e-6), path


def test_serving_checkpoint_roundtrip(converted, tmp_path):
    mc, _, _, _, served = converted
    serving.save_serving(served, str(tmp_path / "serve"))
    loaded = serving.load_serving(str(tmp_path / "serve"), mc, DIGIT_TASKS)
    x = images(4, seed=5)
    from_disk = served._apply(loaded.variables, x)  # the same compiled server, fed the variables read back
    for task, y in served(x).items():
        np.testing.assert_array_equal(np.asarray(from_disk[task]), np.asarray(y))
    assert loaded.dropped == served.dropped and loaded.subnet == served.subnet
    for path, q in served.integer_leaves().items():
        assert loaded.integer_leaves()[path].dtype == q.dtype


def test_checkpoint_bytes_on_disk(converted, tmp_path):
    """Integer weights take exactly 1/4 (int8) or 1/8 (int4) of their float32 bytes; the blob has no other overhead."""
    _, subnet, _, params, served = converted
    served_bytes = serving.save_serving(served, str(tmp_path / "serve"))
    float_bytes = serving.save_float_params(params, str(tmp_path / "float"))
    blob = (tmp_path / "serve" / "serving.bin").stat().st_size
    ints = served.integer_leaves()
    int_bytes = sum(int(np.ceil(q.size * jnp.iinfo(q.dtype).bits / 8)) for q in ints.values())
    kernel_float_bytes = sum(4 * q.size for q in ints.values())
    float_leftover = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(served.variables["params"]))
    scales = sum(x.size * x.dtype.itemsize for p, x in
                 flax.traverse_util.flatten_dict(serving._plain_aqt(served.variables[QUANT_COLLECTION]), sep="/").items()
                 if p.endswith("/scale"))
    assert blob == int_bytes + float_leftover + scales
    body = [q for p, q in ints.items() if p.startswith("block")]
    assert sum(int(np.ceil(q.size * jnp.iinfo(q.dtype).bits / 8)) for q in body) * (32 // subnet.weight_bits) \
        == sum(4 * q.size for q in body)
    assert (tmp_path / "float" / "float.bin").stat().st_size == serving.param_bytes(params)
    assert served_bytes < float_bytes
    assert kernel_float_bytes > int_bytes


def test_int4_packing_roundtrip():
    """The serving checkpoint packs int4 with the one packing of effjax.quant.rtn."""
    values = np.arange(-8, 8, dtype=np.int8)
    for shape in [(16,), (3, 5), (1,), (7, 2, 3)]:
        v = np.resize(values, shape)
        packed = rtn.pack_int4(jnp.asarray(v).astype(jnp.int4))
        assert packed.dtype == np.uint8 and packed.size == (v.size + 1) // 2
        np.testing.assert_array_equal(rtn.unpack_int4(packed, shape), v)


def test_serving_blob_of_an_older_int4_format_is_refused_in_one_line(tmp_path):
    (tmp_path / "m.bin").write_bytes(bytes(8))
    with pytest.raises(ValueError, match="two's-complement nibble format of earlier effjax versions"):
        serving._read_arrays({"w": ["int4", [16], 0, 8]}, str(tmp_path), "m")


def test_convert_rejects_float_subnet():
    mc = tiny_model_config()
    with pytest.raises(ValueError, match="quantizes nothing"):
        serving.convert(mc, DIGIT_TASKS, IMAGE_SHAPE, {}, SubnetConfig())


def test_serving_memory_is_the_cost_models_weight_bits(converted):
    """The shared cost prices a quantized model as served: integers + scales + float leftovers, to the byte."""
    mc, subnet, _, _, served = converted
    assert elastic_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, subnet).weight_bits == 8 * served.nbytes()


@pytest.mark.parametrize("name, subnet, min_ratio", [
    # width 256, 2 blocks: kernels are ~98% of the float bytes; int4 body with int8 first/last layers
    ("int8", SUBNETS["int8"], 3.7),
    ("int4", SUBNETS["int4"], 6.0),  # one int4 per byte would give ~3.9x
])
def test_checkpoint_is_about_4x_or_8x_smaller_where_matmul_weights_dominate(name, subnet, min_ratio, tmp_path):
    mc = tiny_model_config(hidden=256, layers=2)
    params = init_params(serving.quantized_model(mc, DIGIT_TASKS, subnet))
    served = serving.convert(mc, DIGIT_TASKS, IMAGE_SHAPE, params, subnet)
    float_bytes = serving.save_float_params(params, str(tmp_path / "float"))
    served_bytes = serving.save_serving(served, str(tmp_path / "serve"))
    ints = served.integer_leaves()
    body_ints = sum(q.size for p, q in ints.items() if p.startswith("block"))
    int_bytes = sum(int(np.ceil(q.size * jnp.iinfo(q.dtype).bits / 8)) for q in ints.values())
    # int4 is stored packed: the body's integers take size / 2 bytes
    packed_body = sum(int(np.ceil(q.size * jnp.iinfo(q.dtype).bits / 8)) for p, q in ints.items() if p.startswith("block"))
    assert packed_body == body_ints * subnet.weight_bits // 8
    overhead = served_bytes - int_bytes  # scales, biases, LayerNorms, tokens (float32) and the JSON index
    ratio = float_bytes / served_bytes
    assert min_ratio < ratio <= 32 / subnet.weight_bits, (name, ratio, int_bytes, overhead)

"""The AQT provider: bits per layer group, options, and injection into every Dense and attention einsum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from aqt.jax.v2.flax import aqt_flax
from aqt.jax.v2.numerics import no_numerics
from aqt.jax.v2.utils import QuantMode

from effjax.models import build_model, layers
from effjax.models.layers import ATTENTION_SCORES_GROUP
from effjax.quant import aqt_config
from effjax.quant.aqt_config import QuantOptions, make_provider, provider_from_config
from effjax.subnet import SubnetConfig
from tests.quant_aqt.helpers import DIGIT_TASKS, dot_generals, equations, images, init_params, tiny_model_config

RNG = {"params": jax.random.PRNGKey(0)}


def _fwd_bits(provider, group):
    factory = provider(group)
    if factory is None:
        return None, None
    q = factory.args[0].fwd.dg_quantizer
    bits = lambda numerics: None if isinstance(numerics, no_numerics.NoNumerics) else numerics.bits  # noqa: E731
    return bits(q.rhs.numerics), bits(q.lhs.numerics)


def test_float_subnet_has_no_provider():
    assert make_provider(SubnetConfig()) is None
    assert make_provider(SubnetConfig(first_last_bits=8)) is None
    assert provider_from_config(ml_collections.ConfigDict({"seed": 0})) is None


def test_groups_take_their_bits_first_and_last_separately():
    p = make_provider(SubnetConfig(weight_bits=4, activation_bits=4, first_last_bits=8))
    assert _fwd_bits(p, "embed") == (8, 8)
    assert _fwd_bits(p, "head") == (8, 8)
    for body in ("attention", "mlp", "expert", "predictor"):
        assert _fwd_bits(p, body) == (4, 4)
    # first/last float while the body is quantized
    p = make_provider(SubnetConfig(weight_bits=8, activation_bits=8, first_last_bits=None))
    assert _fwd_bits(p, "embed") == (8, 8) and _fwd_bits(p, "mlp") == (8, 8)


def test_weight_only_quantization_leaves_activations_float():
    p = make_provider(SubnetConfig(weight_bits=8, activation_bits=None, first_last_bits=8))
    assert _fwd_bits(p, "mlp") == (8, None)
    assert p("mlp").args[0].fwd.dg_accumulator_dtype is None  # a float matmul: no int speed-up


def test_provider_from_config_reads_quant_section():
    quant = ml_collections.ConfigDict({"weight_bits": 4, "activation_bits": 8, "first_last_bits": 8,
                                       "activation_calibration": "absmean", "activation_clip_scale": 2.5})
    p = provider_from_config(ml_collections.ConfigDict({"quant": quant}))
    assert _fwd_bits(p, "mlp") == (4, 8)
    lhs = p("mlp").args[0].fwd.dg_quantizer.lhs
    assert lhs.calibration.keywords["clipping_scale"] == 2.5 and lhs.numerics.clip_gradient


@pytest.mark.parametrize("kwargs, field", [
    ({"activation_calibration": "ema"}, "activation_calibration"),
    ({"activation_clip_scale": 0.0}, "activation_clip_scale"),
    ({"bwd_bits": 3}, "bwd_bits"),
    ({"rounding": "up"}, "rounding"),
    ({"rounding": "stochastic"}, "bwd_bits"),
])
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        QuantOptions(**kwargs)


def test_unknown_quant_field_is_rejected():
    config = ml_collections.ConfigDict({"quant": {"weight_bits": 8, "wieght_bits": 4}})
    with pytest.raises(ValueError, match="wieght_bits"):
        provider_from_config(config)


def test_every_dense_and_attention_einsum_runs_an_integer_matmul():
    """int8 body: each Dense and both attention einsums of each block are int8 x int8 dot_generals; none is float."""
    layers = 1
    mc = tiny_model_config(layers=layers)
    model = build_model(mc, DIGIT_TASKS, make_provider(SubnetConfig(weight_bits=8, activation_bits=8)))
    params = init_params(model)
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x, rngs=RNG))(params, images(2))
    dots = dot_generals(jaxpr)
    integer = [e for e in dots if all(v.aval.dtype == jnp.int8 for v in e.invars)]
    floating = [e for e in dots if all(v.aval.dtype == jnp.float32 for v in e.invars)]
    kernels = [p for p in jax.tree_util.tree_leaves_with_path(params) if p[0][-1].key == "kernel"]
    assert len(kernels) == 1 + 6 * layers + 2 * len(DIGIT_TASKS)
    assert len(integer) == len(kernels) + 2 * layers
    assert len(floating) == 0
    assert all(e.params["preferred_element_type"] == jnp.int32 for e in integer)
    batched = [e for e in integer if e.params["dimension_numbers"][1] != ((), ())]
    assert len(batched) == 2 * layers  # the einsums: batched over (batch, heads)


def test_int4_body_with_int8_first_and_last_layers():
    """Each body Dense rounds both operands to int4; patch embedding and heads to int8."""
    mc = tiny_model_config(layers=1)
    model = build_model(mc, DIGIT_TASKS, make_provider(SubnetConfig(weight_bits=4, activation_bits=4, first_last_bits=8)))
    params = init_params(model)
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x, rngs=RNG))(params, images(2))
    converts = [e.params["new_dtype"] for e in equations(jaxpr, "convert_element_type")]
    body, first_last = 6 + 2, 1 + 2 * len(DIGIT_TASKS)  # 6 Dense + 2 attention einsums
    assert converts.count(jnp.int4) == 2 * body
    # int8: first/last operands, plus AQT's upcast of int4 x int4 to int8 for the CPU matmul
    assert converts.count(jnp.int8) == 2 * first_last + 2 * body


@pytest.mark.parametrize("options", [
    QuantOptions(), QuantOptions(activation_calibration="absmean"),
    pytest.param(QuantOptions(bwd_bits=8, rounding="stochastic"), marks=pytest.mark.slow)])
def test_quantized_model_is_differentiable(options):
    mc = tiny_model_config()
    float_model = build_model(mc, DIGIT_TASKS)
    q_model = build_model(mc, DIGIT_TASKS, make_provider(SubnetConfig(weight_bits=4, activation_bits=4), options))
    params = init_params(float_model)
    x = images(8)

    def loss(model, p):
        out = model.apply({"params": p}, x, rngs=RNG)
        return sum(jnp.mean(v ** 2) for v in out.values())

    grads = jax.jit(jax.grad(lambda p: loss(q_model, p)))(params)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for _, g in flat)
    assert all(float(jnp.abs(g).max()) > 0 for path, g in flat if path[-1].key == "kernel")
    qf, ff = (jax.jit(m.apply)({"params": params}, x, rngs=RNG)["digit"] for m in (q_model, float_model))
    assert not np.allclose(qf, ff)


def test_model_subnet_strips_bits():
    assert aqt_config.model_subnet(SubnetConfig(weight_bits=4, activation_bits=4)) is None
    kept = aqt_config.model_subnet(SubnetConfig(weight_bits=4, encoder_width=0.5))
    assert kept == SubnetConfig(encoder_width=0.5)


def test_attention_scores_group_quantizes_both_operands_as_activations():
    p = make_provider(SubnetConfig(weight_bits=4, activation_bits=8, first_last_bits=8))
    assert _fwd_bits(p, ATTENTION_SCORES_GROUP) == (8, 8)  # activation bits on both sides
    factory = p(ATTENTION_SCORES_GROUP)
    assert factory.keywords["rhs_quant_mode"] == QuantMode.TRAIN
    assert factory.keywords["rhs_freeze_mode"] == aqt_flax.FreezerMode.NONE  # nothing to convert
    for mode in (QuantMode.CONVERT, QuantMode.SERVE):
        serve = make_provider(SubnetConfig(weight_bits=8, activation_bits=8), mode=mode)
        assert serve(ATTENTION_SCORES_GROUP).keywords["rhs_quant_mode"] == QuantMode.TRAIN
    assert make_provider(SubnetConfig(weight_bits=8, activation_bits=None))(ATTENTION_SCORES_GROUP) is None


def test_einsum_through_a_dot_general_equals_jnp_einsum():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 4))
    y = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 3, 4))
    w = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 5, 7))
    gathered = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 5, 6, 4))
    for eq, a, b in [("bqhd,bkhd->bhqk", x, y), ("bhqk,bkhd->bqhd", w, y),
                     ("bhqd,bhqkd->bhqk", x.transpose(0, 2, 1, 3), gathered)]:
        np.testing.assert_allclose(layers.einsum(eq, a, b, jax.lax.dot_general), jnp.einsum(eq, a, b),
                                   rtol=1e-5, atol=1e-5)
        assert layers.einsum(eq, a, b) is not None
    with pytest.raises(ValueError, match="subscripts"):
        layers.einsum("bqd,bkd->bq", x[:, :, 0], y[:, :, 0], jax.lax.dot_general)  # sums k over one operand


def test_float_models_ignore_the_attention_scores_group():
    """No provider, or one that answers None, gives bit-identical outputs to plain jnp.einsum attention."""
    mc = tiny_model_config(layers=1)
    seen = []

    def recording(group):
        seen.append(group)
        return None

    plain, hooked = build_model(mc, DIGIT_TASKS), build_model(mc, DIGIT_TASKS, recording)
    params = init_params(plain)
    x = images(4)
    a, b = (jax.jit(m.apply)({"params": params}, x) for m in (plain, hooked))
    for task in a:
        np.testing.assert_array_equal(np.asarray(a[task]), np.asarray(b[task]))
    assert seen.count(ATTENTION_SCORES_GROUP) >= 2

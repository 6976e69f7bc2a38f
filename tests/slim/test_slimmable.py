"""Slimmable layers: prefix slices of max-width kernels, LayerNorm over the active slice, jit caching."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models.elastic_vit import Attention
from effjax.models.layers import SlimDense, SlimLayerNorm, SlimMlp
from effjax.subnet import decoder_width, encoder_widths, make_divisible


@pytest.mark.parametrize("value, divisor, maximum, expected", [
    (16.0, 8, 64, 16), (20.0, 8, 64, 24), (11.0, 8, 64, 16), (3.0, 8, 64, 8), (64.0, 8, 64, 64), (70.0, 8, 64, 64),
    (2.5, 8, 4, 2), (9.0, 8, 4, 4),
])
def test_make_divisible(value, divisor, maximum, expected):
    assert make_divisible(value, divisor, maximum) == expected


def test_encoder_widths_round_to_heads_and_multiples_of_8():
    assert [encoder_widths(64, 4, 128, w) for w in (0.25, 0.5, 0.75, 1.0)] == [
        (1, 16, 32), (2, 32, 64), (3, 48, 96), (4, 64, 128)]
    assert [decoder_width(64, w) for w in (0.25, 0.5, 0.75, 1.0)] == [16, 32, 48, 64]
    with pytest.raises(ValueError, match="encoder_width"):
        encoder_widths(64, 4, 128, 0.0)


def test_slim_dense_is_the_prefix_slice():
    layer = SlimDense(12, 10, ("embed", "mlp"), "mlp")
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 12))
    params = nn.unbox(layer.init(jax.random.PRNGKey(1), x)["params"])
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    y = layer.apply({"params": params}, x[:, :5], 4)
    expected = x[:, :5] @ params["kernel"][:5, :4] + params["bias"][:4]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output width"):
        layer.apply({"params": params}, x, 11)
    with pytest.raises(ValueError, match="input width"):
        layer.apply({"params": params}, jnp.zeros((3, 13)), 4)


def test_layernorm_over_the_active_slice_and_padded_equivalent():
    ln = SlimLayerNorm(8)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8)) * 3 + 1
    params = {"scale": jnp.linspace(0.5, 2, 8), "bias": jnp.linspace(-1, 1, 8)}
    sliced = ln.apply({"params": params}, x[..., :5])
    reference = nn.LayerNorm().apply({"params": {"scale": params["scale"][:5], "bias": params["bias"][:5]}}, x[..., :5])
    np.testing.assert_allclose(sliced, reference, rtol=1e-5, atol=1e-5)
    padded = jnp.pad(x[..., :5], ((0, 0), (0, 0), (0, 3)))
    masked = jax.jit(lambda p, v, a: ln.apply({"params": p}, v, a))(params, padded, jnp.int32(5))
    np.testing.assert_allclose(masked[..., :5], sliced, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(masked[..., 5:], 0.0)


def test_attention_and_mlp_at_reduced_width_use_the_first_heads():
    attention, mlp = Attention(8, 2, 4, num_tokens=5), SlimMlp(8, 16)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
    pa = nn.unbox(attention.init(jax.random.PRNGKey(1), x)["params"])
    pm = nn.unbox(mlp.init(jax.random.PRNGKey(1), x)["params"])
    small = x[..., :4]
    y = attention.apply({"params": pa}, small, 1)
    q, k, v = (small @ pa[n]["kernel"][:4, :4] + pa[n]["bias"][:4] for n in ("query", "key", "value"))
    w = jax.nn.softmax(q @ k.transpose(0, 2, 1) / 2.0, axis=-1)
    expected = (w @ v) @ pa["out"]["kernel"][:4, :4] + pa["out"]["bias"][:4]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    h = nn.gelu(small @ pm["wi"]["kernel"][:4, :8] + pm["wi"]["bias"][:8])
    np.testing.assert_allclose(mlp.apply({"params": pm}, small, 8), h @ pm["wo"]["kernel"][:8, :4] + pm["wo"]["bias"][:4],
                               rtol=1e-4, atol=1e-5)


def test_each_width_compiles_once_under_jit():
    layer = SlimDense(16, 16, ("embed", "mlp"), "mlp")
    x = jnp.ones((2, 16))
    params = nn.unbox(layer.init(jax.random.PRNGKey(0), x)["params"])
    traces = []

    def forward(p, v, width):
        traces.append(width)
        return layer.apply({"params": p}, v[:, :width], width)

    f = jax.jit(forward, static_argnums=2)
    for width in (8, 16, 8, 16, 8):
        f(params, x, width)
    assert traces == [8, 16]

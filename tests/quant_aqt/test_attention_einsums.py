"""The attention einsums of the slimmable and sparse attention run through the AQT provider too."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import sparse_attention as sa
from effjax.models.layers import injected_dot_general
from effjax.models.elastic_vit import Attention
from effjax.quant.aqt_config import make_provider
from effjax.subnet import SubnetConfig
from tests.quant_aqt.helpers import dot_generals

INT8 = make_provider(SubnetConfig(weight_bits=8, activation_bits=8))
RNG = {"params": jax.random.PRNGKey(0)}


def _int8_batched_dots(fn, *args):
    dots = dot_generals(jax.make_jaxpr(fn)(*args))
    floating = [e for e in dots if any(v.aval.dtype == jnp.float32 for v in e.invars)]
    integer = [e for e in dots if all(v.aval.dtype == jnp.int8 for v in e.invars)]
    return [e for e in integer if e.params["dimension_numbers"][1] != ((), ())], floating


@pytest.mark.parametrize("heads", [2, 4])
def test_slim_attention_einsums_are_int8_at_every_width(heads):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16))
    plain = Attention(16, 4, 4, num_tokens=5)
    quantized = Attention(16, 4, 4, num_tokens=5, dot_general_provider=INT8)
    params = plain.init(RNG, x)["params"]
    batched, floating = _int8_batched_dots(lambda p: quantized.apply({"params": p}, x, heads, rngs=RNG), params)
    assert len(batched) == 2 and not floating
    y_q, y_f = quantized.apply({"params": params}, x, heads, rngs=RNG), plain.apply({"params": params}, x, heads)
    assert y_q.shape == y_f.shape == x.shape and not np.allclose(y_q, y_f)
    np.testing.assert_allclose(y_q, y_f, atol=0.1 * float(jnp.abs(y_f).max()))


class _Attend(nn.Module):
    provider: Any
    attention_path: str

    @nn.compact
    def __call__(self, q, k, v, key_indices):
        dots = tuple(injected_dot_general(self.provider) for _ in range(2))
        return sa.sparse_attention(q, k, v, key_indices, 0.35, self.attention_path, dot_generals=dots)[0]


def _qkv(n=11):
    keys = jax.random.split(jax.random.PRNGKey(n), 3)
    return [jax.random.normal(k, (2, 3, n, 8)) for k in keys]


@pytest.mark.parametrize("path", sa.ATTENTION_PATHS)
def test_sparse_attention_paths_run_int8_einsums(path):
    q, k, v = _qkv()
    idx = sa.random_key_indices(jax.random.PRNGKey(1), (2, 3, 10, 11), 4 / 11)
    batched, floating = _int8_batched_dots(lambda *a: _Attend(INT8, path).apply({}, *a, rngs=RNG), q, k, v, idx)
    # masked: logits + mix; gathered: the class row (dense) and the other rows (gathered), each logits + mix
    assert len(batched) == (2 if path == "masked" else 4) and not floating


def test_quantized_gathered_path_stays_close_to_masked():
    """Same integer logits on kept pairs; the values' per-channel scales differ (N vs k keys), so the
    outputs differ by quantization noise: within the quantized-vs-float error, not exactly."""
    q, k, v = _qkv(17)
    idx = sa.random_key_indices(jax.random.PRNGKey(2), (2, 3, 16, 17), 6 / 17)
    masked, gathered = (_Attend(INT8, p).apply({}, q, k, v, idx, rngs=RNG) for p in sa.ATTENTION_PATHS)
    exact = sa.sparse_attention(q, k, v, idx, 0.35, "masked")[0]
    np.testing.assert_allclose(masked[:, :, 0], gathered[:, :, 0], atol=1e-6)  # class row: the same dense attention
    quant_error = float(jnp.abs(masked - exact).max())
    assert 0 < float(jnp.abs(gathered - masked).max()) <= 2 * quant_error
    assert quant_error < 0.05 * float(jnp.abs(exact).max())


def test_plain_dot_generals_keep_the_float_paths_bit_identical():
    q, k, v = _qkv()
    idx = sa.random_key_indices(jax.random.PRNGKey(1), (2, 3, 10, 11), 4 / 11)
    for path in sa.ATTENTION_PATHS:
        a = sa.sparse_attention(q, k, v, idx, 0.35, path)[0]
        b = _Attend(None, path).apply({}, q, k, v, idx)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_query_blocks_refuse_injected_dot_generals():
    q, k, v = _qkv()
    idx = sa.random_key_indices(jax.random.PRNGKey(1), (2, 3, 10, 11), 4 / 11)
    with pytest.raises(ValueError, match="query_block"):
        sa.gathered_attention(q, k, v, idx, 0.35, query_block=4, dot_generals=(jax.lax.dot_general, None))


def test_moe_router_and_experts_run_int8():
    from effjax.models.moe import MoeMlp

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))
    plain = MoeMlp(num_experts=4, expert_dim=8, dispatch="gather", expert_parallel="off")
    quantized = MoeMlp(num_experts=4, expert_dim=8, dispatch="gather", expert_parallel="off", dot_general_provider=INT8)
    params = plain.init(RNG, x)["params"]
    dots = dot_generals(jax.make_jaxpr(lambda p: quantized.apply({"params": p}, x, rngs=RNG, mutable=["aux_loss"]))(params))
    integer = [e for e in dots if all(v.aval.dtype == jnp.int8 for v in e.invars)]
    assert len(integer) == 3  # router, expert input and output kernels
    floating = [e for e in dots if any(v.aval.dtype == jnp.float32 for v in e.invars)]
    # only the gate-weighted combine of the chosen experts' outputs stays float (routing bookkeeping)
    assert len(floating) == 1 and floating[0].outvars[0].aval.shape == x.shape

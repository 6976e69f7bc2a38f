"""The one round-to-nearest quantizer: numpy and jax.numpy agree, traced bits equal static bits,
the straight-through gradient is the identity, and every caller computes the same numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import expert_bits, qat, weight_quant
from effjax.quant import rtn
from effjax.quant.pvq import rtn_quantize


def _w(shape=(24, 10), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_numpy_and_jax_agree(bits):
    """Same integer codes; values equal to float32 rounding (XLA may divide by q_max as a reciprocal multiply)."""
    w = _w()
    qmax = rtn.max_level(bits)
    scale_np, scale_jnp = rtn.absmax_scale(w, qmax), rtn.absmax_scale(jnp.asarray(w), qmax, xp=jnp)
    np.testing.assert_allclose(np.asarray(scale_jnp), scale_np, rtol=2e-7)
    np.testing.assert_array_equal(np.asarray(rtn.to_codes(jnp.asarray(w), scale_jnp, qmax, xp=jnp)),
                                  rtn.to_codes(w, scale_np, qmax))
    np.testing.assert_allclose(np.asarray(rtn.fake_quantize(jnp.asarray(w), bits, xp=jnp)), rtn.fake_quantize(w, bits),
                               rtol=3e-7, atol=0)


@pytest.mark.parametrize("bits", [4, 8, 32])
def test_traced_bits_equal_static_bits(bits):
    """Same values to float32 rounding (XLA may fold a constant q_max into a reciprocal multiply); 32 bits is float."""
    w = jnp.asarray(_w())
    traced = jax.jit(lambda x, b: rtn.fake_quantize(x, b, xp=jnp))(w, jnp.int32(bits))
    np.testing.assert_allclose(np.asarray(traced), np.asarray(rtn.fake_quantize(w, bits, xp=jnp)), rtol=3e-7, atol=0)
    assert float(jax.jit(lambda b: rtn.max_level(b, jnp))(jnp.int32(bits))) == min(2 ** (bits - 1) - 1, 2 ** 15 - 1)
    if bits == 32:
        np.testing.assert_array_equal(np.asarray(traced), np.asarray(w))


def test_codes_within_range_and_error_within_half_step():
    w = _w()
    for bits in (2, 4, 8):
        q, scale = rtn.quantize(w, bits)
        assert q.dtype == np.int8 and np.abs(q).max() <= 2 ** (bits - 1) - 1
        assert np.all(np.abs(rtn.dequantize(q, scale) - w) <= scale / 2 + 1e-6)
    with pytest.raises(ValueError, match="bits=16"):
        rtn.quantize(w, 16)


def test_zero_columns_keep_a_unit_scale():
    w = _w()
    w[:, 3] = 0
    q, scale = rtn.quantize(w, 4)
    assert scale[0, 3] == 1.0 and not q[:, 3].any()


def test_straight_through_gradient_is_identity():
    w = jnp.asarray(_w())
    grad = jax.grad(lambda x: jnp.sum(rtn.straight_through(x, 4) * 3.0))(w)
    np.testing.assert_array_equal(np.asarray(grad), np.full(w.shape, 3.0, np.float32))


def test_int4_packing_roundtrip_full_range_and_layout():
    codes = np.arange(-8, 8, dtype=np.int8)
    packed = rtn.pack_int4(codes)
    assert packed.nbytes == 8 and packed[0] == 0 | (1 << 4)  # -8 -> 0 in the low nibble, -7 -> 1 in the high nibble
    np.testing.assert_array_equal(rtn.unpack_int4(packed, codes.shape), codes)
    odd = codes[:5].reshape(5, 1)
    np.testing.assert_array_equal(rtn.unpack_int4(rtn.pack_int4(odd), odd.shape), odd)


def test_every_caller_computes_the_same_numbers():
    w = _w()
    reference = rtn.fake_quantize(w, 4)
    np.testing.assert_allclose(np.asarray(qat.fake_quantize(jnp.asarray(w), 4)), reference, rtol=3e-7, atol=0)
    np.testing.assert_array_equal(weight_quant.dequantize_kernel(*weight_quant.quantize_kernel(w, 4)), reference)
    np.testing.assert_allclose(expert_bits.quantize_rtn(w, 4), reference, rtol=1e-6, atol=1e-7)
    grouped, bits_per_weight = rtn_quantize(w, 4, group_size=w.shape[0])  # one group = one whole column
    np.testing.assert_allclose(grouped, reference, rtol=2e-3, atol=1e-6)  # float16 scales
    assert bits_per_weight == 4 + 16 / w.shape[0]

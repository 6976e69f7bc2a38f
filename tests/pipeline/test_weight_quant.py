import numpy as np
import pytest

from effjax.compress import weight_quant as wq
from effjax.quant import rtn


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_error_is_within_half_a_step(bits):
    w = np.random.default_rng(0).normal(size=(37, 11)).astype(np.float32)
    q, scale = wq.quantize_kernel(w, bits)
    assert q.dtype == np.int8 and np.abs(q).max() <= 2 ** (bits - 1) - 1
    err = np.abs(wq.dequantize_kernel(q, scale) - w)
    assert np.all(err <= scale / 2 + 1e-6)
    assert np.allclose(np.abs(wq.dequantize_kernel(q, scale)).max(0), np.abs(w).max(0), rtol=1e-6)


def test_int4_pack_roundtrip_odd_length():
    q = np.random.default_rng(1).integers(-7, 8, size=(5, 3)).astype(np.int8)
    packed = rtn.pack_int4(q)
    assert packed.nbytes == 8
    np.testing.assert_array_equal(rtn.unpack_int4(packed, q.shape), q)


def test_payload_bits_counts_codes_and_scales():
    assert wq.payload_bits((64, 32), 32) == 32 * 64 * 32
    assert wq.payload_bits((64, 32), 4) == 4 * 64 * 32 + 32 * 32
    with pytest.raises(ValueError, match="bits=3"):
        wq.quantize_kernel(np.ones((2, 2)), 3)

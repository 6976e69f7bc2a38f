"""Gain-shape PVQ of kernels: SQNR vs RTN, rotation, scale quantizer, padding, zeros, errors."""

import numpy as np
import pytest

from effjax.quant.pvq import PVQSpec, dequantize_matrix, quantize_matrix, rtn_quantize, sqnr_db
from effjax.quant.pvq.weights import fit_scale_codebook, quantize_gains, rotate_rows, unrotate_rows


@pytest.mark.parametrize("shape", [(128, 256), pytest.param((256, 1024), marks=pytest.mark.slow)])
def test_reference_sqnr_against_rtn_int3(shape):
    """Reference facts: PVQ D=8, K=12, 4-bit scale ~15.6 dB; RTN int3 group-64 ~12.0 dB."""
    weights = np.random.default_rng(0).standard_normal(shape)
    spec = PVQSpec(group_size=8, pulses=12, scale_bits=4)
    pvq_db = sqnr_db(weights, dequantize_matrix(quantize_matrix(weights, spec)))
    rtn, rtn_bits = rtn_quantize(weights, bits=3, group_size=64)
    assert spec.bits_per_weight == 3.25 and rtn_bits == 3.25
    assert 15.5 < pvq_db < 16.5
    assert 11.7 < sqnr_db(weights, rtn) < 12.3


def test_rotation_is_orthogonal_and_inverted():
    matrix = np.random.default_rng(1).standard_normal((24, 5))  # Hadamard blocks of 8
    rotated = rotate_rows(matrix, seed=3)
    assert np.isclose(np.linalg.norm(rotated), np.linalg.norm(matrix))
    np.testing.assert_allclose(unrotate_rows(rotated, seed=3), matrix, atol=1e-12)
    assert not np.allclose(rotated, matrix)


def test_scale_codebook_is_lloyd_max():
    gains = np.concatenate([np.full(100, 1.0), np.full(50, 3.0)])
    np.testing.assert_allclose(fit_scale_codebook(gains, 1), [1.0, 3.0])
    np.testing.assert_allclose(fit_scale_codebook(gains, 0), [gains.mean()], rtol=1e-6)
    codebook = fit_scale_codebook(np.random.default_rng(0).rayleigh(size=5000), 3)
    assert np.all(np.diff(codebook) > 0)
    np.testing.assert_array_equal(quantize_gains(np.array([0.0, 100.0]), codebook), [0, 7])


def test_padding_zero_kernel_and_bits():
    weights = np.random.default_rng(3).standard_normal((70, 9))
    coded = quantize_matrix(weights, PVQSpec(8, 12, 4))
    assert dequantize_matrix(coded).shape == (70, 9) and dequantize_matrix(coded).dtype == np.float32
    assert coded.num_groups == 9 * 9 and coded.bits_per_weight == pytest.approx(81 * 26 / 630)
    zeros = dequantize_matrix(quantize_matrix(np.zeros((16, 4)), PVQSpec(8, 12, 4)))
    np.testing.assert_array_equal(zeros, 0.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        quantize_matrix(np.full((8, 2), np.nan), PVQSpec())
    with pytest.raises(ValueError, match="2-D"):
        quantize_matrix(np.ones(8), PVQSpec())
    with pytest.raises(ValueError, match="scale_bits"):
        PVQSpec(scale_bits=17)
    with pytest.raises(ValueError, match="pulses K"):
        PVQSpec(pulses=-2)

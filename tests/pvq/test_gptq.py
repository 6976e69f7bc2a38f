"""Hessian-aware PVQ: reduces layer output error on held-out data; identity H changes nothing."""

import numpy as np
import pytest

from effjax.quant.pvq import PVQSpec, dequantize_matrix, gptq_quantize_matrix, input_hessian, quantize_matrix, sqnr_db


def _correlated_inputs(rng, mixing, rows):
    return rng.standard_normal((rows, mixing.shape[0])) @ mixing * 0.5 + rng.standard_normal((rows, mixing.shape[0]))


def test_identity_hessian_gives_plain_pvq():
    weights = np.random.default_rng(0).standard_normal((32, 16))
    spec = PVQSpec(8, 12, 4)
    plain = quantize_matrix(weights, spec)
    hessian_aware = gptq_quantize_matrix(weights, np.eye(32), spec)
    np.testing.assert_array_equal(plain.codewords, hessian_aware.codewords)
    np.testing.assert_array_equal(plain.scale_codes, hessian_aware.scale_codes)


@pytest.mark.parametrize("rotate", [False, True])
def test_hessian_aware_lowers_held_out_output_error(rotate):
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((64, 96)) * 0.1
    mixing = rng.standard_normal((64, 64))
    calibration, held_out = _correlated_inputs(rng, mixing, 1024), _correlated_inputs(rng, mixing, 1024)
    spec = PVQSpec(8, 12, 4, rotate=rotate, seed=5)
    plain = dequantize_matrix(quantize_matrix(weights, spec))
    hessian_aware = dequantize_matrix(gptq_quantize_matrix(weights, input_hessian(calibration, 64), spec))
    reference = held_out @ weights
    assert sqnr_db(reference, held_out @ hessian_aware) > sqnr_db(reference, held_out @ plain) + 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="hessian must be"):
        gptq_quantize_matrix(np.ones((8, 2)), np.eye(4), PVQSpec())
    with pytest.raises(ValueError, match="features"):
        input_hessian(np.ones((5, 3)), 4)
    with pytest.raises(ValueError, match="damping"):
        gptq_quantize_matrix(np.ones((8, 2)), np.eye(8), PVQSpec(), damping=0.0)

"""Weight bits (as served) and BOPs of int8 / int4 configs in the shared cost model."""

from __future__ import annotations

import pytest

from effjax.compress.cost import total_cost, vit_layers
from effjax.compress.cost_elastic import elastic_cost
from effjax.subnet import SubnetConfig
from tests.quant_aqt.helpers import DIGIT_TASKS, IMAGE_SHAPE, tiny_model_config

FIRST_LAST = ("embed", "head")


def _by_kind(layers):
    first_last = [layer for layer in layers if layer.group in FIRST_LAST]
    body = [layer for layer in layers if layer.group not in FIRST_LAST and not layer.activation_only]
    einsums = [layer for layer in layers if layer.activation_only]
    return first_last, body, einsums


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_bits_and_bops_follow_the_paper_formulas(bits):
    """memory = sum(kernel weights x b_w) + 32 x (float leftovers + scales); BOPs = sum(MACs x b_w x b_a),
    first/last layers at 8 bits, attention einsums at b_a x b_a."""
    mc = tiny_model_config(hidden=64, layers=2)
    layers = vit_layers(mc, IMAGE_SHAPE, DIGIT_TASKS)
    first_last, body, einsums = _by_kind(layers)
    cost = total_cost(layers, SubnetConfig(weight_bits=bits, activation_bits=bits, first_last_bits=8))
    kernels = lambda ls: sum(layer.params - layer.float_params for layer in ls)  # noqa: E731
    stays_float = sum(layer.float_params + layer.quant_scales for layer in layers)
    macs = lambda ls: sum(layer.macs for layer in ls)  # noqa: E731
    assert cost.weight_bits == 8 * kernels(first_last) + bits * kernels(body) + 32 * stays_float
    assert cost.bops == 64 * macs(first_last) + bits * bits * (macs(body) + macs(einsums))
    float_cost = total_cost(layers)
    assert float_cost.weight_bits == 32 * float_cost.params
    assert float_cost.bops == 1024 * macs(layers)
    assert cost.flops == float_cost.flops and cost.params == float_cost.params


def test_what_stays_float_is_biases_norms_and_tokens():
    """Kernel weights = params - float_params, exactly the 2-D kernels of the model (counted by hand)."""
    mc = tiny_model_config(hidden=64, layers=2)
    layers = {layer.name: layer for layer in vit_layers(mc, IMAGE_SHAPE, DIGIT_TASKS)}
    d, m = 64, 128
    assert layers["block0/qkv"].params - layers["block0/qkv"].float_params == 3 * d * d
    assert layers["block0/mlp"].params - layers["block0/mlp"].float_params == 2 * d * m
    assert layers["block0/mlp"].quant_scales == m + d  # one scale per output channel of wi and wo
    assert layers["tokens"].float_params == layers["tokens"].params
    assert layers["block0/ln"].float_params == layers["block0/ln"].params


def test_int4_is_cheaper_than_int8_than_float():
    mc = tiny_model_config(hidden=64, layers=2)
    costs = [elastic_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, SubnetConfig(weight_bits=b, activation_bits=b))
             for b in (None, 8, 4)]
    assert costs[0].bops > costs[1].bops > costs[2].bops
    assert costs[0].weight_bits > costs[1].weight_bits > costs[2].weight_bits
    # what stays float keeps a tiny model from the 4x / 8x of its kernels
    assert costs[0].weight_bits / costs[1].weight_bits < 4
    assert costs[0].weight_bits / costs[2].weight_bits < 8


def test_weight_only_quantization_keeps_attention_einsums_float():
    mc = tiny_model_config(hidden=64, layers=2)
    layers = vit_layers(mc, IMAGE_SHAPE, DIGIT_TASKS)
    _, _, einsums = _by_kind(layers)
    weight_only = total_cost(einsums, SubnetConfig(weight_bits=8, activation_bits=None))
    assert weight_only.bops == 32 * 32 * sum(e.macs for e in einsums)

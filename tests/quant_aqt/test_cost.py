"""Weight bits and BOPs of int8 / int4 configs in the shared cost model, and the as-run variant."""

from __future__ import annotations

import pytest

from effjax.compress.cost import total_cost, vit_cost, vit_layers
from effjax.compress.cost_quant import quantized_vit_cost
from effjax.compress.subnet import SubnetConfig
from tests.quant_aqt.helpers import DIGIT_TASKS, IMAGE_SHAPE, tiny_model_config

FIRST_LAST = ("embed", "head")


def _by_kind(layers):
    first_last = [layer for layer in layers if layer.group in FIRST_LAST]
    body = [layer for layer in layers if layer.group not in FIRST_LAST and not layer.activation_only]
    einsums = [layer for layer in layers if layer.activation_only]
    return first_last, body, einsums


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_bits_and_bops_follow_the_paper_formulas(bits):
    """memory = sum(weights x b_w); BOPs = sum(MACs x b_w x b_a), first/last layers at 8 bits."""
    mc = tiny_model_config(hidden=64, layers=2)
    layers = vit_layers(mc, IMAGE_SHAPE, DIGIT_TASKS)
    first_last, body, einsums = _by_kind(layers)
    cost = total_cost(layers, SubnetConfig(weight_bits=bits, activation_bits=bits, first_last_bits=8))
    params = lambda ls: sum(layer.params for layer in ls)  # noqa: E731
    macs = lambda ls: sum(layer.macs for layer in ls)  # noqa: E731
    assert cost.weight_bits == 8 * params(first_last) + bits * params(body)
    assert cost.bops == 64 * macs(first_last) + bits * bits * (macs(body) + macs(einsums))
    float_cost = total_cost(layers)
    assert float_cost.weight_bits == 32 * float_cost.params
    assert float_cost.bops == 1024 * macs(layers)
    assert cost.flops == float_cost.flops and cost.params == float_cost.params


def test_int4_is_cheaper_than_int8_than_float():
    mc = tiny_model_config(hidden=64, layers=2)
    costs = [vit_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, SubnetConfig(weight_bits=b, activation_bits=b))
             for b in (None, 8, 4)]
    assert costs[0].bops > costs[1].bops > costs[2].bops
    assert costs[0].weight_bits > costs[1].weight_bits > costs[2].weight_bits
    # the body is most of the model: int8 ~4x and int4 ~6-8x smaller in the paper's memory metric
    assert 3.5 < costs[0].weight_bits / costs[1].weight_bits <= 4
    assert 6 < costs[0].weight_bits / costs[2].weight_bits <= 8


@pytest.mark.parametrize("bits", [8, 4])
def test_as_run_cost_prices_attention_einsums_float(bits):
    mc = tiny_model_config(hidden=64, layers=2)
    subnet = SubnetConfig(weight_bits=bits, activation_bits=bits)
    _, _, einsums = _by_kind(vit_layers(mc, IMAGE_SHAPE, DIGIT_TASKS))
    shared = vit_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, subnet)
    as_run = quantized_vit_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, subnet)
    assert as_run.bops - shared.bops == sum(e.macs for e in einsums) * (32 * 32 - bits * bits)
    assert (as_run.flops, as_run.params, as_run.weight_bits) == (shared.flops, shared.params, shared.weight_bits)
    assert quantized_vit_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, subnet, einsums_quantized=True) == shared
    float_subnet = SubnetConfig()
    assert quantized_vit_cost(mc, IMAGE_SHAPE, DIGIT_TASKS, float_subnet) == vit_cost(mc, IMAGE_SHAPE, DIGIT_TASKS)

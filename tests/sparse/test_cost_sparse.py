"""Sparsifiner cost model: agrees with the dense ViT cost at rho = 1, hand counts, and XLA's cost analysis."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from effjax.compress import cost_sparse as cs
from effjax.compress.cost_elastic import elastic_cost
from effjax.data.specs import TaskSpec
from effjax.models.sparse_vit import build
from effjax.subnet import SubnetConfig

TASKS = (TaskSpec("seg", "segmentation", 4), TaskSpec("count", "classification", 4))


def _model_config(**overrides):
    c = ml_collections.ConfigDict(dict(
        name="sparse_vit", patch_size=4, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64, decoder_dim=16,
        dtype="float32", predictor_channels=4, predictor_token_reduction=8, predictor_top_coefficients=4,
        token_pruning_layers=()))
    c.update(overrides)
    return c


def test_rho_one_costs_what_the_dense_vit_costs():
    mc = _model_config()
    dense = elastic_cost(mc, (32, 32, 3), TASKS)  # the mt_vit preset
    ours = cs.sparse_vit_cost(mc, (32, 32, 3), TASKS, SubnetConfig())
    assert ours.flops == dense.flops
    predictor_params = mc.num_layers * (2 * (8 * 4 + 4) + 2 * 65 * 8)
    assert ours.params == dense.params + predictor_params


def test_mhsa_flops_by_hand():
    mc = _model_config(num_layers=1)
    n, h, dh, c, m, top = 65, 4, 8, 4, 8, 4
    k = 17  # ceil(0.25 * 65)
    pairs = n + (n - 1) * k
    core = 2 * (2 * pairs * dh * h) + 5 * h * pairs
    predictor = 2 * h * ((2 * n - 1) * dh * c + n * m * c + (n - 1) * m * c + (n - 1) * top * n) + 5 * h * (n - 1) * m
    layers = cs.sparse_vit_layers(mc, (32, 32, 3), TASKS, SubnetConfig(attention_keep_ratio=0.25))
    assert cs.mhsa_flops(layers) == core + predictor
    assert cs.predictor_flops(layers) == predictor
    dense = cs.mhsa_flops(cs.sparse_vit_layers(mc, (32, 32, 3), TASKS, SubnetConfig()))
    assert dense == 2 * (2 * n * n * dh * h) + 5 * h * n * n


def test_flops_fall_with_rho_and_with_token_pruning():
    mc = _model_config(token_pruning_layers=(0,))
    flops = [cs.mhsa_flops(cs.sparse_vit_layers(mc, (32, 32, 3), TASKS, SubnetConfig(attention_keep_ratio=r)))
             for r in (0.1, 0.25, 0.5, 0.9)]
    assert flops == sorted(flops)
    assert cs.tokens_per_layer(mc, 64, SubnetConfig(token_keep_ratio=0.5)) == [65, 33]
    pruned = cs.sparse_vit_cost(mc, (32, 32, 3), TASKS, SubnetConfig(token_keep_ratio=0.5)).flops
    assert pruned < cs.sparse_vit_cost(mc, (32, 32, 3), TASKS, SubnetConfig()).flops


@pytest.mark.parametrize("subnet", [SubnetConfig(), SubnetConfig(attention_keep_ratio=0.25, token_keep_ratio=0.5)])
def test_within_ten_percent_of_xla_cost_analysis(subnet):
    """XLA also counts the index arithmetic of gathers and top-k as FLOPs, so it reads a little higher."""
    mc = _model_config(token_pruning_layers=(0,))
    model = build(mc, TASKS)
    images = jnp.zeros((1, 32, 32, 3))
    params = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, images))["params"]
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x, subnet=subnet)).lower(params, images).compile()
    analysis = compiled.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"]
    ours = cs.sparse_vit_cost(mc, (32, 32, 3), TASKS, subnet).flops
    assert 0.9 * xla <= ours <= 1.03 * xla, (ours, xla)


def test_bad_ratios_are_one_line_errors():
    with pytest.raises(ValueError, match="keep_ratio=0"):
        cs.kept_key_count(0, 10)
    with pytest.raises(ValueError, match="token_keep_ratio=1.5"):
        cs.kept_token_count(1.5, 10)

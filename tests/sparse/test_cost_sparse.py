"""Sparsifiner pricing of the elastic cost walker: the dense ViT cost at rho = 1, hand counts, token pruning,
and XLA's cost analysis."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from effjax.compress import cost_sparse as cs
from effjax.compress.cost_elastic import elastic_cost, elastic_layers, tokens_per_block
from effjax.data.specs import TaskSpec
from effjax.models.elastic_vit import build
from effjax.subnet import SubnetConfig, kept_key_count, kept_token_count

TASKS = (TaskSpec("seg", "segmentation", 4), TaskSpec("count", "classification", 4))


def _model_config(**overrides):
    c = ml_collections.ConfigDict(dict(
        name="sparse_vit", patch_size=4, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64, decoder_dim=16,
        dtype="float32", predictor_channels=4, predictor_token_reduction=8, predictor_top_coefficients=4,
        sparse_layers=(0, 1), token_pruning_layers=()))
    c.update(overrides)
    return c


def test_rho_one_costs_what_the_dense_vit_costs():
    mc = _model_config()
    dense = elastic_cost(_model_config(sparse_layers=()), (32, 32, 3), TASKS)  # the mt_vit preset
    ours = elastic_cost(mc, (32, 32, 3), TASKS, SubnetConfig())
    assert ours.flops == dense.flops
    predictor_params = mc.num_layers * (2 * (8 * 4 + 4) + 2 * 65 * 8)
    assert ours.params == dense.params + predictor_params


def test_mhsa_flops_by_hand():
    mc = _model_config(num_layers=1, sparse_layers=(0,))
    n, h, dh, c, m, top = 65, 4, 8, 4, 8, 4
    k = 17  # ceil(0.25 * 65)
    pairs = n + (n - 1) * k
    core = 2 * (2 * pairs * dh * h) + 5 * h * pairs
    predictor = 2 * h * ((2 * n - 1) * dh * c + n * m * c + (n - 1) * m * c + (n - 1) * top * n) + 5 * h * (n - 1) * m
    layers = elastic_layers(mc, (32, 32, 3), TASKS, SubnetConfig(attention_keep_ratio=0.25))
    assert cs.mhsa_flops(layers) == core + predictor
    assert cs.predictor_flops(layers) == predictor
    dense = cs.mhsa_flops(elastic_layers(mc, (32, 32, 3), TASKS, SubnetConfig()))
    assert dense == 2 * (2 * n * n * dh * h) + 5 * h * n * n
    random = elastic_layers(_model_config(num_layers=1, sparse_layers=(0,), mask_scores="random"), (32, 32, 3), TASKS,
                            SubnetConfig(attention_keep_ratio=0.25))
    assert cs.predictor_flops(random) == 0 and cs.mhsa_flops(random) == core


def test_flops_fall_with_rho_and_with_token_pruning():
    mc = _model_config(token_pruning_layers=(0,))
    flops = [cs.mhsa_flops(elastic_layers(mc, (32, 32, 3), TASKS, SubnetConfig(attention_keep_ratio=r)))
             for r in (0.1, 0.25, 0.5, 0.9)]
    assert flops == sorted(flops)
    assert tokens_per_block(mc, 64, SubnetConfig(token_keep_ratio=0.5)) == [65, 33]
    pruned = elastic_cost(mc, (32, 32, 3), TASKS, SubnetConfig(token_keep_ratio=0.5)).flops
    assert pruned < elastic_cost(mc, (32, 32, 3), TASKS, SubnetConfig()).flops


@pytest.mark.parametrize("subnet", [SubnetConfig(), SubnetConfig(attention_keep_ratio=0.25, token_keep_ratio=0.5)])
def test_within_ten_percent_of_xla_cost_analysis(subnet):
    mc = _model_config(token_pruning_layers=(0,))
    model = build(mc, TASKS)
    images = jnp.zeros((1, 32, 32, 3))
    params = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, images))["params"]
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x, subnet=subnet)).lower(params, images).compile()
    analysis = compiled.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"]
    ours = elastic_cost(mc, (32, 32, 3), TASKS, subnet).flops
    assert abs(ours - xla) / xla < 0.10, (ours, xla)


def test_bad_ratios_are_one_line_errors():
    with pytest.raises(ValueError, match="keep_ratio=0"):
        kept_key_count(0, 10)
    with pytest.raises(ValueError, match="token_keep_ratio=1.5"):
        kept_token_count(1.5, 10)

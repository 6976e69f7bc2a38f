"""The multi-task MoE ViT: task-conditioned routing, single-task inference, subnet knobs, training, cost model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import cost_elastic
from effjax.config.base import base_config
from effjax.data import shapes
from effjax.models import build_model
from effjax.models.layers import AUX_LOSS_COLLECTION
from effjax.models.moe import MOE_STATS_COLLECTION
from effjax.subnet import SubnetConfig
from effjax.train import trainer
from tests.foundation.helpers import tiny


def _model_config(**overrides):
    c = base_config().model
    c.update(dict(name="moe_vit", patch_size=8, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=64, decoder_dim=16,
                  num_experts=4, expert_dim=16, moe_every=2, capacity_factor=1.0))
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def model_and_params():
    model = build_model(_model_config(), shapes.tasks())
    images = jax.random.uniform(jax.random.PRNGKey(0), (4, 32, 32, 3))
    params = nn.unbox(model.init({"params": jax.random.PRNGKey(1)}, images)["params"])
    return model, params, images


def test_one_router_per_task_and_single_task_inference_matches(model_and_params):
    model, params, images = model_and_params
    assert params["blocks_1"]["moe"]["router"].shape == (3, 32, 4)
    apply = jax.jit(lambda p, x, task=None: model.apply({"params": p}, x, task=task), static_argnames="task")
    every = apply(params, images)
    only = apply(params, images, task="depth")
    assert list(only) == ["depth"]
    np.testing.assert_allclose(np.asarray(only["depth"]), np.asarray(every["depth"]), atol=1e-6)

    # a task's outputs depend on its own router only
    changed = jax.tree.map(lambda a: a, params)
    changed["blocks_1"]["moe"]["router"] = params["blocks_1"]["moe"]["router"].at[0].set(
        5 * jax.random.normal(jax.random.PRNGKey(2), (32, 4)))
    after = apply(changed, images)
    np.testing.assert_array_equal(np.asarray(after["depth"]), np.asarray(every["depth"]))
    assert not np.allclose(np.asarray(after["segmentation"]), np.asarray(every["segmentation"]))
    with pytest.raises(ValueError, match="task"):
        model.apply({"params": params}, images, task="normals")


def test_subnet_knobs_change_routing_and_others_are_rejected(model_and_params):
    model, params, images = model_and_params

    def experts_per_token(subnet):
        _, stats = model.apply({"params": params}, images, subnet=subnet, task="count", mutable=[MOE_STATS_COLLECTION])
        entry = stats[MOE_STATS_COLLECTION]["blocks_1"]["moe"]["router2"][0]
        return float(np.mean(entry["experts_per_token"]))

    assert experts_per_token(SubnetConfig(moe_top_k=1)) == 1.0
    assert experts_per_token(SubnetConfig()) == 2.0  # the model's default top_k
    assert 1.0 <= experts_per_token(SubnetConfig(moe_top_p=0.9)) <= 4.0
    assert experts_per_token(SubnetConfig(moe_top_p=0.9)) > experts_per_token(SubnetConfig(moe_top_p=0.3))
    with pytest.raises(ValueError, match="encoder_width"):
        model.apply({"params": params}, images, subnet=SubnetConfig(encoder_width=0.5))


@pytest.mark.slow  # a tiny training run; the foundation tests already train tiny configs
def test_tiny_training_sums_routing_losses(tmp_path):
    config = tiny("moe_digits")
    result = trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
    assert all(np.isfinite(v) for v in result.train_losses.values())
    assert set(result.metrics["test"]) == {"digit", "parity", "ge5"}
    # aux losses are sown once per task pass and MoE layer: 3 tasks x 1 layer x (balance + z)
    model = trainer.build(config, devices=jax.devices()[:1]).model
    _, aux = model.apply({"params": result.state.params}, jnp.zeros((2, 8, 8, 1)), mutable=[AUX_LOSS_COLLECTION])
    leaves = jax.tree.leaves(aux[AUX_LOSS_COLLECTION])
    assert len(leaves) == 6 and all(float(v) > 0 for v in leaves)


@pytest.mark.parametrize("task", [None, "depth"])
def test_cost_model_matches_xla_and_parameter_count(task):
    mc = _model_config(patch_size=4, hidden_dim=32, num_experts=4, expert_dim=16, capacity_factor=1.0)
    model = build_model(mc, shapes.tasks())
    images = jnp.zeros((1, 32, 32, 3))
    params = nn.unbox(model.init({"params": jax.random.PRNGKey(0)}, images)["params"])
    assert sum(a.size for a in jax.tree.leaves(params)) == cost_elastic.elastic_cost(mc, (32, 32, 3), shapes.tasks()).params
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x, task=task)).lower(params, images).compile()
    xla = compiled.cost_analysis()["flops"]
    ours = cost_elastic.elastic_cost(mc, (32, 32, 3), shapes.tasks(), task=task).flops  # executed: E * C slots
    assert abs(ours - xla) / xla < 0.05, (ours, xla)
    # the active convention prices the k = 2 experts a token uses, fewer than the E * C = 4 * 33 executed slots
    active = cost_elastic.elastic_cost(mc, (32, 32, 3), shapes.tasks(), task=task, experts_per_token=2.0).flops
    assert active < ours


def test_single_task_costs_less_than_all_tasks_and_top_p_is_priced_as_dispatched():
    mc = _model_config(patch_size=4)
    cost = lambda subnet=None, **kw: cost_elastic.elastic_cost(mc, (32, 32, 3), shapes.tasks(), subnet, **kw)  # noqa: E731
    all_tasks, one = cost(), cost(task="count")
    assert one.flops < all_tasks.flops and one.params < all_tasks.params  # one head, one pass
    assert cost(SubnetConfig(moe_top_k=1)).flops < all_tasks.flops
    # top-p under capacity dispatch is dropless: every expert runs every token's slot, more than top-2 executes
    assert cost(SubnetConfig(moe_top_p=0.4)).flops > all_tasks.flops
    mc.dispatch = "sorted"  # the grouped matmul runs only the routed rows, which top-p leaves data dependent
    with pytest.raises(ValueError, match="experts_per_token"):
        cost(SubnetConfig(moe_top_p=0.4))
    assert cost(SubnetConfig(moe_top_p=0.4), experts_per_token=1.5).flops < all_tasks.flops

"""Expert parallelism: a (data=2, expert=4) mesh over 8 simulated CPU devices gives the single-device results."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.config.base import base_config
from effjax.models import moe
from effjax.models.moe import MoeMlp
from effjax.train import mesh as mesh_lib
from effjax.train import trainer
from tests.foundation.helpers import tiny


def _expert_mesh(batch_over_experts: bool = True):
    c = base_config()
    c.mesh.data, c.mesh.expert = 2, 4
    rules = mesh_lib.rules_tuple(c.logical_axis_rules)
    if not batch_over_experts:  # the examples replicated over each expert group
        rules = tuple(("activation_batch", ("data", "fsdp")) if name == "activation_batch" else (name, axes)
                      for name, axes in rules)
    return mesh_lib.make_mesh(c.mesh), rules


@pytest.mark.parametrize("batch_over_experts", [True, False], ids=["batch_split_over_experts", "batch_replicated"])
def test_layer_outputs_and_gradients_match_one_device_and_use_all_to_all(batch_over_experts):
    assert jax.device_count() == 8
    mesh, rules = _expert_mesh(batch_over_experts)
    layer = MoeMlp(num_experts=8, expert_dim=16, num_routers=2, top_k=2, capacity_factor=1.0, dispatch="gather")
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 12, 16))
    boxed = layer.init({"params": jax.random.PRNGKey(0)}, x)["params"]
    params = nn.unbox(boxed)

    def loss(p, x):
        return jnp.sum(layer.apply({"params": p}, x, 1) ** 2)

    ref_value, ref_grads = jax.jit(jax.value_and_grad(loss))(params, x)  # no mesh: one device
    ref_out = jax.jit(lambda p, x: layer.apply({"params": p}, x, 1))(params, x)

    shardings = mesh_lib.tree_shardings(boxed, mesh, rules)
    assert shardings["wi"].spec[0] == "expert"
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        p = jax.device_put(params, shardings)
        xs = jax.device_put(x, mesh_lib.batch_sharding(mesh, rules))
        apply = jax.jit(lambda p, x: layer.apply({"params": p}, x, 1))
        hlo = apply.lower(p, xs).compile().as_text()
        out = apply(p, xs)
        value, grads = jax.jit(jax.value_and_grad(loss))(p, xs)
    assert "all-to-all" in hlo
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        assert moe.expert_parallel_plan(8, 8).batch_split == batch_over_experts
        jaxpr = str(jax.make_jaxpr(lambda p, x: layer.apply({"params": p}, x, 1))(p, xs))
    assert ("all_gather" in jaxpr) != batch_over_experts  # only a replicated group gathers its examples back
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-5)
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5)
    for name in ref_grads:
        np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(ref_grads[name]), atol=1e-5, err_msg=name)


@pytest.mark.slow  # 167 s wall on the loaded shared 2-core machine (compiles for 8 devices)
def test_model_on_expert_mesh_matches_single_device():
    config = tiny("moe_digits")
    config.model.num_experts = 8  # divisible by the 4-way expert axis
    config.eval.batch_size = 16
    single = trainer.build(config, devices=jax.devices()[:1])
    config.mesh.data, config.mesh.expert = 2, 4
    sharded = trainer.build(config, devices=jax.devices())
    assert dict(sharded.mesh.shape)["expert"] == 4

    rng = jax.random.PRNGKey(3)
    state_one = trainer.init_state(single, rng)
    state_ep = trainer.init_state(sharded, rng)
    wi = state_ep.params["blocks_1"]["moe"]["wi"]
    assert wi.sharding.spec[0] == "expert"
    images = jnp.asarray(single.dataset.splits["val"]["image"][:16])

    def predict(setup, params):
        with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
            x = jax.device_put(images, setup.batch_sharding)
            return jax.device_get(jax.jit(lambda p, x: setup.model.apply({"params": p}, x))(params, x))

    one, ep = predict(single, state_one.params), predict(sharded, state_ep.params)
    for task in one:
        np.testing.assert_allclose(ep[task], one[task], atol=1e-5, err_msg=task)


def test_supernet_experts_on_the_mesh_match_one_device_with_a_traced_top_k():
    """The elastic model's MoE layer (the supernet's) takes the same all-to-all path under the mesh, at an active
    width below the max and with a traced top-k, and matches one device."""
    from effjax.models.elastic_vit import Experts

    mesh, rules = _expert_mesh()
    layer = Experts(max_in_features=24, num_experts=8, expert_dim=16, capacity_factor=1.0)
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 12, 16))  # active width 16 of 24
    boxed = layer.init({"params": jax.random.PRNGKey(0)}, x, 2, 2)["params"]
    params = nn.unbox(boxed)

    def loss(p, x, k):
        return jnp.sum(layer.apply({"params": p}, x, k, 2) ** 2)

    k = jnp.int32(1)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(loss))(params, x, k)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        p = jax.device_put(params, mesh_lib.tree_shardings(boxed, mesh, rules))
        xs = jax.device_put(x, mesh_lib.batch_sharding(mesh, rules))
        jaxpr = str(jax.make_jaxpr(loss)(p, xs, k))
        value, grads = jax.jit(jax.value_and_grad(loss))(p, xs, k)
    assert "shard_map" in jaxpr and "all_to_all" in jaxpr
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5)
    for name in ref_grads:
        np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(ref_grads[name]), atol=1e-5, err_msg=name)

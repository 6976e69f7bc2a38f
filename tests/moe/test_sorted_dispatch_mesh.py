"""The dropless "sorted" dispatch on a (data=2, expert=4) mesh of 8 simulated CPU devices gives the one-device results."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.config.base import base_config
from effjax.models.moe import MoeMlp
from effjax.train import mesh as mesh_lib


@pytest.mark.slow  # compiles for 8 devices: about a minute on the shared 2-core machine
def test_sorted_dispatch_on_an_expert_mesh_matches_one_device():
    assert jax.device_count() == 8
    c = base_config()
    c.mesh.data, c.mesh.expert = 2, 4
    mesh, rules = mesh_lib.make_mesh(c.mesh), mesh_lib.rules_tuple(c.logical_axis_rules)
    layer = MoeMlp(num_experts=8, expert_dim=16, num_routers=2, top_k=2, dispatch="sorted")
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 12, 16))
    boxed = layer.init({"params": jax.random.PRNGKey(0)}, x)["params"]
    params = nn.unbox(boxed)

    def loss(p, x):
        return jnp.sum(layer.apply({"params": p}, x, 1) ** 2)

    ref_value, ref_grads = jax.jit(jax.value_and_grad(loss))(params, x)
    reference = MoeMlp(num_experts=8, expert_dim=16, num_routers=2, top_k=2, dispatch="dense")
    dense_out = jax.jit(lambda p, x: reference.apply({"params": p}, x, 1))(params, x)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        p = jax.device_put(params, mesh_lib.tree_shardings(boxed, mesh, rules))
        xs = jax.device_put(x, mesh_lib.batch_sharding(mesh, rules))
        out = jax.jit(lambda p, x: layer.apply({"params": p}, x, 1))(p, xs)
        value, grads = jax.jit(jax.value_and_grad(loss))(p, xs)
    np.testing.assert_allclose(np.asarray(out), np.asarray(dense_out), atol=1e-5)  # dropless: every expert's answer
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5)
    for name in ref_grads:
        np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(ref_grads[name]), atol=1e-5, err_msg=name)

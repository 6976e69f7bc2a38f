"""Tensor parallelism through the rules table: a (data=2, tensor=4) mesh computes what one device does."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effjax.train import step as step_lib
from effjax.train.trainer import build, init_state
from tests.foundation.helpers import tiny


def _forward_and_grads(config, devices):
    setup = build(config, devices)
    state = init_state(setup, jax.random.PRNGKey(0))
    images = jnp.asarray(setup.dataset.splits["val"]["image"][:32])
    batch = {"image": images, **{t.name: jnp.asarray(setup.dataset.splits["val"][t.name][:32]) for t in setup.dataset.tasks}}
    step = step_lib.make_train_step(setup.model, setup.tx, setup.dataset.tasks, {}, setup.schedule)
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        preds = jax.jit(lambda p, x: setup.model.apply({"params": p}, x), in_shardings=(setup.state_shardings.params, setup.batch_sharding))(state.params, images)
        new_state, metrics = jax.jit(step, in_shardings=(setup.state_shardings, setup.batch_sharding, None),
                                     out_shardings=(setup.state_shardings, None))(state, batch, jax.random.PRNGKey(1))
    return setup, state, jax.device_get(preds), jax.device_get(new_state.params), float(metrics["loss"])


def test_tensor_parallel_mesh_matches_one_device():
    one = tiny()
    tp = tiny()
    tp.mesh.data, tp.mesh.tensor = 2, 4
    tp.model.num_heads = 4
    _, _, preds1, params1, loss1 = _forward_and_grads(one, jax.devices()[:1])
    setup, state, preds8, params8, loss8 = _forward_and_grads(tp, jax.devices())
    spec = state.params["blocks_0"]["mlp"]["wi"]["kernel"].sharding.spec
    assert spec[1] == "tensor", spec  # the MLP width really is split over the tensor axis
    assert state.params["blocks_0"]["attention"]["query"]["kernel"].sharding.spec[1] == "tensor"
    for task in preds1:
        np.testing.assert_allclose(preds8[task], preds1[task], rtol=1e-5, atol=1e-5)
    assert abs(loss8 - loss1) < 1e-5 * max(1.0, abs(loss1))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), params8, params1)

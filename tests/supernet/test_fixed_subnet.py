"""The fixed_subnet objective: one static configuration trained alone (QAT at its bits)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effjax.config.load import load_config
from effjax.subnet import SubnetConfig
from effjax.train import objectives
from effjax.train.fixed_subnet import make_fixed_subnet_step, subnet_from_config
from effjax.train.sandwich import SandwichOptions, make_sandwich_step
from effjax.train.setup import build, init_state

SMALL = SubnetConfig(encoder_width=0.5, decoder_widths=(("digit", 0.5), ("ge5", 1.0), ("parity", 0.5)),
                     attention_keep_ratio=0.5, moe_top_k=1, weight_bits=4, first_last_bits=8)


@pytest.fixture(scope="module")
def setup():
    config = load_config("configs/supernet.py:digits,tiny")
    config.model.width_menu = (0.5, 1.0)  # two width branches keep the sandwich's compile short
    config.train.objective = "fixed_subnet"
    config.train.subnet = SMALL.to_dict()
    config.train.learning_rate = 1e-2
    config.train.schedule = "constant"
    config.train.warmup_steps = 0
    s = build(config, jax.devices()[:1])
    batch = {k: jnp.asarray(v[:16]) for k, v in s.dataset.splits["train"].items()}
    return config, s, batch


def _train(config, s, batch, steps, seed=0):
    step = jax.jit(objectives.build_train_step(s, config))
    state = init_state(s, jax.random.PRNGKey(seed))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, jax.random.PRNGKey(seed))
        losses.append(float(metrics["loss"]))
    return state, losses


def test_config_field_round_trips(setup):
    config, _, _ = setup
    assert subnet_from_config(config) == SMALL
    with pytest.raises(ValueError, match="config.train.subnet"):
        bad = load_config("configs/supernet.py:digits,tiny")
        bad.train.subnet = {"encoder_width": 2.0}
        subnet_from_config(bad)


@pytest.mark.slow
def test_trains_and_is_deterministic(setup):
    config, s, batch = setup
    state, losses = _train(config, s, batch, 10)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses
    again, losses_again = _train(config, s, batch, 10)
    assert losses == losses_again
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_parameters_outside_the_subnet_get_no_gradient(setup):
    config, s, batch = setup
    step = make_fixed_subnet_step(s.model, optax.sgd(1.0), s.dataset.tasks, {}, optax.constant_schedule(1.0), SMALL)
    state = init_state(s, jax.random.PRNGKey(0))
    state = state.replace(opt_state=optax.sgd(1.0).init(state.params))
    new_state, _ = jax.jit(step)(state, batch, jax.random.PRNGKey(0))
    moved = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), state.params, new_state.params)
    query = moved["blocks_0"]["attention"]["query"]["kernel"]  # [d, d]; at width 0.5 the [:d/2, :d/2] block is active
    half = query.shape[0] // 2
    assert np.abs(query[:half, :half]).max() > 0
    assert np.abs(query[half:, :]).max() == 0 and np.abs(query[:, half:]).max() == 0
    predictor = jax.tree.leaves(moved["blocks_0"]["attention"]["predictor"])
    assert any(np.abs(p).max() > 0 for p in predictor), "the sparse config's predictor must learn (dense pass)"


def test_full_float_config_is_the_sandwich_max_part(setup):
    _, s, batch = setup
    tasks = s.dataset.tasks
    options = SandwichOptions(num_random=0, inplace_kd_weight=0.0, cikd_weight=0.0, label_weight_small=1.0,
                              keep_ratios=(0.5, 1.0), top_ks=(1, 2), weight_bits=(4, 32))
    schedule = optax.constant_schedule(1.0)
    tx = optax.sgd(1.0)
    state = init_state(s, jax.random.PRNGKey(3))
    state = state.replace(opt_state=tx.init(state.params))
    _, sandwich = jax.jit(make_sandwich_step(s.model, tx, tasks, {}, schedule, options))(state, batch, jax.random.PRNGKey(0))
    full = SubnetConfig(moe_top_k=2)
    _, alone = jax.jit(make_fixed_subnet_step(s.model, tx, tasks, {}, schedule, full))(state, batch, jax.random.PRNGKey(0))
    assert float(alone["loss"]) == pytest.approx(float(sandwich["loss/max"]), rel=1e-5)
    for t in tasks:
        assert float(alone[f"loss/{t.name}"]) == pytest.approx(float(sandwich[f"loss/{t.name}"]), rel=1e-5)

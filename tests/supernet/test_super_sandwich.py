"""The sandwich step over all supernet knobs equals the objective written config by config
with static knobs (masked attention, static top-k, fake-quantized weights)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effjax.compress.qat import fake_quantize_params
from effjax.config.load import load_config
from effjax.data import load_dataset
from effjax.models import build_model
from effjax.models.layers import AUX_LOSS_COLLECTION
from effjax.subnet import SubnetConfig
from effjax.train import losses
from effjax.train.sandwich import (SandwichOptions, distillation_loss, feature_distillation_loss, make_sandwich_step,
                                   sample_configs, sample_knob_indices)
from effjax.train.state import TrainState

OPTIONS = SandwichOptions(num_random=1, inplace_kd_weight=1.0, cikd_weight=0.5, keep_ratios=(0.25, 0.5, 1.0),
                          top_ks=(1, 2), weight_bits=(4, 8, 32))


@pytest.fixture(scope="module")
def setup():
    config = load_config("configs/supernet.py:digits,tiny")
    config.model.width_menu = (0.5, 1.0)  # two width branches keep the compile short
    dataset = load_dataset(config.data)
    model = build_model(config.model, dataset.tasks)
    batch = {k: jnp.asarray(v[:8]) for k, v in dataset.splits["train"].items()}
    params = model.init(jax.random.PRNGKey(0), batch["image"])["params"]
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params, is_leaf=lambda x: hasattr(x, "value"))
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params)
    tx = optax.sgd(1.0)
    step = jax.jit(make_sandwich_step(model, tx, dataset.tasks, {}, optax.constant_schedule(1.0), OPTIONS))
    state = TrainState(step=jnp.int32(3), params=params, opt_state=tx.init(params), skipped_in_a_row=jnp.int32(0),
                       skipped_total=jnp.int32(0))
    new_state, metrics = step(state, batch, jax.random.PRNGKey(7))
    return model, dataset.tasks, batch, state, new_state, metrics


def _manual_loss(model, tasks, params, batch, rows, knob_rows):
    menu = sorted(model.width_menu)
    (preds, tokens), mutated = model.apply({"params": params}, batch["image"], train=True,
                                           subnet=SubnetConfig(moe_top_k=2), return_features=True,
                                           mutable=[AUX_LOSS_COLLECTION])
    total, _ = losses.multitask_loss(tasks, preds, batch, {})
    total = total + sum(jnp.sum(x) for x in jax.tree.leaves(mutated[AUX_LOSS_COLLECTION]))
    teacher, teacher_tokens = jax.lax.stop_gradient((preds, tokens))
    for row, knobs in zip(rows, knob_rows):
        keep, top_k, bits = OPTIONS.keep_ratios[knobs[0]], OPTIONS.top_ks[knobs[1]], OPTIONS.weight_bits[knobs[2]]
        q = fake_quantize_params(params, jnp.int32(bits))
        width = menu[row[0]]
        f, mutated = model.apply({"params": q}, batch["image"], width, keep, top_k, method="encode", path="masked",
                                 mutable=[AUX_LOSS_COLLECTION])
        padded = jnp.pad(f, ((0, 0), (0, 0), (0, model.hidden_dim - f.shape[-1])))
        kd = 0.0
        for i, t in enumerate(tasks):
            p = model.apply({"params": q}, f, t.name, menu[row[1 + i]], batch["image"].shape[1:3], method="decode")
            kd = kd + distillation_loss(t, p, teacher[t.name])
        cikd = feature_distillation_loss(padded, teacher_tokens, f.shape[-1])
        aux = sum(jnp.sum(x) for x in jax.tree.leaves(mutated[AUX_LOSS_COLLECTION]))
        total = total + OPTIONS.inplace_kd_weight * kd + OPTIONS.cikd_weight * cikd + aux
    return total


def test_one_update_from_all_knobs_equals_the_static_objective(setup):
    model, tasks, batch, state, new_state, metrics = setup
    rng = jax.random.fold_in(jax.random.PRNGKey(7), 3)
    rows = np.asarray(sample_configs(rng, OPTIONS.num_random, len(tasks), len(model.width_menu)))
    knob_rows = np.asarray(sample_knob_indices(jax.random.fold_in(rng, 1), OPTIONS.num_random, (3, 2, 3)))
    assert (knob_rows[0] == 0).all() and knob_rows.shape == (2, 3)
    loss, grads = jax.jit(jax.value_and_grad(lambda p: _manual_loss(model, tasks, p, batch, rows, knob_rows)))(
        state.params)
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-4)
    applied = jax.tree.map(lambda old, new: old - new, state.params, new_state.params)
    for got, want in zip(jax.tree.leaves(applied), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-5)


def test_auxiliary_losses_are_in_the_max_pass(setup):
    metrics = setup[-1]
    assert float(metrics["loss/aux_max"]) > 0  # predictor distillation, MoE balance and z-loss
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_knob_menus_are_validated():
    with pytest.raises(ValueError, match="keep_ratios"):
        SandwichOptions(keep_ratios=(0.5,))
    with pytest.raises(ValueError, match="weight_bits"):
        SandwichOptions(weight_bits=(3, 32))
    with pytest.raises(ValueError, match="top_ks"):
        SandwichOptions(top_ks=(0, 2))

"""Sandwich-rule step: one update from the summed gradients of max, min and random configs,
with in-place distillation and CIKD that are really on, deterministic per step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effjax.subnet import SubnetConfig
from effjax.train import losses
from effjax.train.sandwich import SandwichOptions, distillation_loss, make_sandwich_step, sample_configs
from effjax.train.state import TrainState

from .conftest import build, init_params, model_config

OPTIONS = SandwichOptions(num_random=2, inplace_kd_weight=1.0, cikd_weight=0.5, label_weight_small=0.25)


@pytest.fixture(scope="module", params=[False, True], ids=["shared_norms", "private_norms"])
def setup(request, digits, digits_batch):
    mc = model_config(patch_size=4, private_norms=request.param)
    model = build(digits.tasks, mc)
    params = init_params(model, digits_batch["image"])
    tx = optax.sgd(1.0)  # the update is minus the summed gradient
    step = jax.jit(make_sandwich_step(model, tx, digits.tasks, {"parity": 0.5}, optax.constant_schedule(1.0), OPTIONS))
    state = TrainState(step=jnp.int32(3), params=params, opt_state=tx.init(params), skipped_in_a_row=jnp.int32(0),
                       skipped_total=jnp.int32(0))
    new_state, metrics = step(state, digits_batch, jax.random.PRNGKey(7))
    return model, mc, digits.tasks, state, new_state, metrics


def _manual_loss(model, mc, tasks, params, batch, rows):
    """The sandwich objective written with static slicing (model `subnet=`), config by config."""
    weights = {t.name: 0.5 if t.name == "parity" else 1.0 for t in tasks}
    menu = sorted(mc.width_menu)
    preds, tokens = model.apply({"params": params}, batch["image"], return_features=True)
    total, _ = losses.multitask_loss(tasks, preds, batch, weights)
    teacher, teacher_tokens = jax.lax.stop_gradient((preds, tokens))
    for row in rows:
        subnet = SubnetConfig(menu[row[0]], tuple((t.name, menu[row[1 + i]]) for i, t in enumerate(tasks)))
        p, f = model.apply({"params": params}, batch["image"], subnet=subnet, return_features=True)
        kd = sum(weights[t.name] * distillation_loss(t, p[t.name], teacher[t.name]) for t in tasks)
        cikd = jnp.mean(jnp.square(f - teacher_tokens[..., : f.shape[-1]]))
        label, _ = losses.multitask_loss(tasks, p, batch, weights)
        total = total + OPTIONS.inplace_kd_weight * kd + OPTIONS.cikd_weight * cikd + OPTIONS.label_weight_small * label
    return total


def test_one_update_from_the_summed_gradients_of_all_configs(setup, digits_batch):
    model, mc, tasks, state, new_state, metrics = setup
    rows = np.asarray(sample_configs(jax.random.fold_in(jax.random.PRNGKey(7), 3), 2, len(tasks), 2))
    assert rows.shape == (3, 4) and (rows[0] == 0).all()
    loss, grads = jax.jit(jax.value_and_grad(lambda p: _manual_loss(model, mc, tasks, p, digits_batch, rows)))(state.params)
    applied = jax.tree.map(lambda old, new: old - new, state.params, new_state.params)
    for got, want in zip(jax.tree.leaves(applied), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5)
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-4)
    assert int(new_state.step) == 4


def test_distillation_terms_are_on(setup):
    metrics = setup[-1]
    assert float(metrics["loss/kd"]) > 1e-3 and float(metrics["loss/cikd"]) > 1e-4
    assert float(metrics["loss/label_small"]) > 0
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_random_configs_are_deterministic_per_step_and_vary_across_steps():
    rng = jax.random.PRNGKey(0)
    draw = lambda step: np.asarray(sample_configs(jax.random.fold_in(rng, step), 4, 3, 4))  # noqa: E731
    np.testing.assert_array_equal(draw(5), draw(5))
    assert not np.array_equal(draw(5), draw(6))
    draws = np.concatenate([draw(s)[1:] for s in range(50)])
    assert set(np.unique(draws)) == {0, 1, 2, 3}


def test_options_are_validated_and_a_non_slim_model_is_refused(digits):
    with pytest.raises(ValueError, match="num_random"):
        SandwichOptions(num_random=-1)
    with pytest.raises(ValueError, match="cikd_weight"):
        SandwichOptions(cikd_weight=float("nan"))
    with pytest.raises(ValueError, match="unknown fields"):
        SandwichOptions.from_config({"slim": {"num_random": 1, "kd": 2.0}})
    from effjax.models.moe_vit import MoeMultiTaskViT

    with pytest.raises(ValueError, match="slim_vit"):
        make_sandwich_step(MoeMultiTaskViT(digits.tasks, 2, 16, 1, 2, 16, 16), optax.sgd(0.1), digits.tasks, {},
                           optax.constant_schedule(0.1), SandwichOptions())
    assert dataclasses.asdict(SandwichOptions.from_config({"slim": {"num_random": 3}}))["num_random"] == 3


def test_project_conflict_removes_only_a_conflicting_component():
    from effjax.train.sandwich import project_conflict, tree_dot

    large = {"a": jnp.asarray([1.0, 0.0]), "b": jnp.asarray([[0.0]])}
    conflicting = {"a": jnp.asarray([-2.0, 1.0]), "b": jnp.asarray([[3.0]])}
    projected, cosine = project_conflict(conflicting, large)
    assert float(cosine) < 0 and abs(float(tree_dot(projected, large))) < 1e-6
    np.testing.assert_allclose(projected["a"], [0.0, 1.0])
    np.testing.assert_allclose(projected["b"], [[3.0]])
    agreeing = {"a": jnp.asarray([2.0, -1.0]), "b": jnp.asarray([[3.0]])}
    kept, cosine = project_conflict(agreeing, large)
    assert float(cosine) > 0
    for got, want in zip(jax.tree.leaves(kept), jax.tree.leaves(agreeing)):
        np.testing.assert_array_equal(got, want)


# the max config's gradient alone: the min config's loss weights at zero, no random configs
MAX_ONLY = dataclasses.replace(OPTIONS, num_random=0, inplace_kd_weight=0.0, cikd_weight=0.0, label_weight_small=0.0)


@pytest.fixture(scope="module")
def sgd_update(digits, digits_batch):
    """update(options): minus the parameter change of one SGD(1) sandwich step from one fixed state, i.e. the
    gradient the step applies (its `project_conflict` looked up when the step is traced)."""
    model = build(digits.tasks, model_config(patch_size=4))
    params = init_params(model, digits_batch["image"])
    tx = optax.sgd(1.0)
    state = TrainState(step=jnp.int32(3), params=params, opt_state=tx.init(params), skipped_in_a_row=jnp.int32(0),
                       skipped_total=jnp.int32(0))

    cache = {}  # options -> update; the plain and max-only updates serve several tests

    def update(options, cached=True):
        if cached and options in cache:
            return cache[options]
        step = jax.jit(make_sandwich_step(model, tx, digits.tasks, {}, optax.constant_schedule(1.0), options))
        new_state, metrics = step(state, digits_batch, jax.random.PRNGKey(7))
        assert -1.0 <= float(metrics["grad_cosine/small_max"]) <= 1.0
        result = jax.tree.map(jnp.subtract, params, new_state.params)
        if cached:
            cache[options] = result
        return result

    return update


def test_gradient_projection_updates_with_the_max_gradient_plus_the_projected_sub_config_gradient(
        sgd_update, monkeypatch):
    """The step sums the sub-configs' gradient apart and adds what the projection returns to the max config's
    (the projection is replaced by a negation here, so the wiring shows whether the two conflict or not)."""
    from effjax.train import sandwich

    plain, grads_max = sgd_update(OPTIONS), sgd_update(MAX_ONLY)
    monkeypatch.setattr(sandwich, "project_conflict", lambda small, large: (jax.tree.map(jnp.negative, small), 0.0))
    negated = sgd_update(dataclasses.replace(OPTIONS, gradient_projection=True), cached=False)
    for got, p, g in zip(jax.tree.leaves(negated), jax.tree.leaves(plain), jax.tree.leaves(grads_max)):
        np.testing.assert_allclose(got, g - (p - g), rtol=2e-3, atol=2e-5)


def test_max_loss_weight_scales_only_the_max_config_gradient(sgd_update):
    plain, grads_max = sgd_update(OPTIONS), sgd_update(MAX_ONLY)
    weighted = sgd_update(dataclasses.replace(OPTIONS, max_loss_weight=3.0))
    for got, p, g in zip(jax.tree.leaves(weighted), jax.tree.leaves(plain), jax.tree.leaves(grads_max)):
        np.testing.assert_allclose(got, p + 2 * g, rtol=2e-3, atol=2e-5)
    with pytest.raises(ValueError, match="max_loss_weight"):
        SandwichOptions(max_loss_weight=-1.0)

"""Supernet training recipes in the sandwich step: BigNAS-style distillation (temperature, scale-free depth
target, distilled tasks, KD warm-up) and OFA progressive shrinking (menus opened by the traced step)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effjax.train import losses
from effjax.train.sandwich import (KNOB_GROUPS, SandwichOptions, distillation_loss, kd_ramp, make_sandwich_step,
                                   open_groups, sample_knob_indices)
from effjax.train.state import TrainState

from .conftest import build, init_params, model_config


def _task(kind, **kw):
    from effjax.data.specs import TaskSpec

    fields = {f.name for f in dataclasses.fields(TaskSpec)}
    args = {"name": kind, "kind": kind, "num_classes": 4 if kind != "depth" else 1}
    return TaskSpec(**{k: v for k, v in {**args, **kw}.items() if k in fields})


def test_temperature_softens_targets_and_keeps_the_gradient_scale():
    task = _task("classification")
    student, teacher = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 4)), jax.random.normal(jax.random.PRNGKey(1), (2, 8, 4))
    t = 4.0
    want = t * t * optax.softmax_cross_entropy(student / t, jax.nn.softmax(teacher / t)).mean()
    assert float(distillation_loss(task, student, teacher, temperature=t)) == pytest.approx(float(want), rel=1e-6)
    assert float(distillation_loss(task, student, teacher)) == pytest.approx(
        float(optax.softmax_cross_entropy(student, jax.nn.softmax(teacher)).mean()), rel=1e-6)
    # the gradient at the teacher's own logits is zero at any temperature (soft CE is minimal there)
    grad = jax.grad(lambda s: distillation_loss(task, s, teacher, temperature=t))(teacher)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_depth_std_target_does_not_depend_on_the_depth_unit():
    student, teacher = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 1)), jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 1))
    metres, millimetres = _task("depth", value_std=1.5), _task("depth", value_std=1500.0)
    std_m = distillation_loss(metres, student, teacher, depth="std")
    std_mm = distillation_loss(millimetres, 1000 * student, 1000 * teacher, depth="std")
    assert float(std_m) == pytest.approx(float(std_mm), rel=1e-5)
    l1_m, l1_mm = (distillation_loss(metres, student, teacher), distillation_loss(millimetres, 1000 * student, 1000 * teacher))
    assert float(l1_mm) == pytest.approx(1000 * float(l1_m), rel=1e-5)
    assert float(std_m) == pytest.approx(float(l1_m) / 1.5, rel=1e-6)
    l2_m, l2_mm = (distillation_loss(metres, student, teacher, depth="l2std"),
                   distillation_loss(millimetres, 1000 * student, 1000 * teacher, depth="l2std"))
    assert float(l2_m) == pytest.approx(float(l2_mm), rel=1e-5)
    assert float(l2_m) == pytest.approx(float(0.5 * jnp.mean(jnp.square((student - teacher) / 1.5))), rel=1e-6)


def test_menus_open_at_their_fractions_of_the_steps():
    opens = (0.25, 0.5, 0.5, 0.75)
    got = [np.asarray(open_groups(jnp.int32(s), opens, 8)).tolist() for s in (0, 1, 2, 3, 4, 5, 6, 7)]
    assert got[0] == got[1] == [False] * 4
    assert got[2] == got[3] == [True, False, False, False]
    assert got[4] == got[5] == [True, True, True, False]
    assert got[6] == got[7] == [True] * 4
    assert np.asarray(open_groups(jnp.int32(0), (), 8)).all() and len(KNOB_GROUPS) == 4


def test_a_closed_menu_draws_only_its_max_value():
    sizes = (4, 3, 2)
    rows = np.concatenate([np.asarray(sample_knob_indices(jax.random.PRNGKey(s), 4, sizes, jnp.asarray([3, 0, 1])))
                           for s in range(30)])
    assert (rows[:, 0] == 3).all() and (rows[:, 2] == 1).all() and set(rows[:, 1]) == {0, 1, 2}


def test_kd_ramp():
    assert [float(kd_ramp(jnp.int32(s), 4)) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert float(kd_ramp(jnp.int32(0), 0)) == 1.0


def test_options_are_validated():
    with pytest.raises(ValueError, match="kd_temperature"):
        SandwichOptions(kd_temperature=0.0)
    with pytest.raises(ValueError, match="kd_depth"):
        SandwichOptions(kd_depth="log")
    with pytest.raises(ValueError, match="progressive_opens"):
        SandwichOptions(progressive_opens=(0.5, 0.25, 0.5, 0.5))
    with pytest.raises(ValueError, match="progressive_opens"):
        SandwichOptions(progressive_opens=(0.5,))
    with pytest.raises(ValueError, match="kd_warmup_steps"):
        SandwichOptions(kd_warmup_steps=-1)


@pytest.fixture(scope="module")
def slim(digits, digits_batch):
    mc = model_config(patch_size=4)
    model = build(digits.tasks, mc)
    params = init_params(model, digits_batch["image"])
    tx = optax.sgd(1.0)  # the update is minus the summed gradient
    state = lambda step: TrainState(step=jnp.int32(step), params=params, opt_state=tx.init(params),  # noqa: E731
                                    skipped_in_a_row=jnp.int32(0), skipped_total=jnp.int32(0))
    return model, digits.tasks, tx, state


def _step(slim, options, num_steps=8):
    model, tasks, tx, _ = slim
    return jax.jit(make_sandwich_step(model, tx, tasks, {}, optax.constant_schedule(1.0), options, num_steps))


def test_before_the_first_menu_opens_only_the_full_config_trains(slim, digits_batch):
    model, tasks, _, state = slim
    options = SandwichOptions(num_random=2, label_weight_small=1.0, progressive_opens=(0.5, 0.75, 0.75, 0.75))
    step = _step(slim, options)
    new_state, metrics = step(state(0), digits_batch, jax.random.PRNGKey(3))
    grads = jax.jit(jax.grad(lambda p: losses.multitask_loss(
        tasks, model.apply({"params": p}, digits_batch["image"]), digits_batch, {})[0]))(state(0).params)
    for old, new, g in zip(jax.tree.leaves(state(0).params), jax.tree.leaves(new_state.params), jax.tree.leaves(grads)):
        np.testing.assert_allclose(old - new, g, rtol=2e-3, atol=2e-5)
    assert int(metrics["menus_open"]) == 0 and float(metrics["loss/label_small"]) == 0.0
    # once the widths open, the sub-configs train too (their gradients enter the update)
    _, later = step(state(4), digits_batch, jax.random.PRNGKey(3))
    assert int(later["menus_open"]) == 1 and float(later["loss/label_small"]) > 0
    assert float(later["grad_norm/small"]) > 0 and float(metrics["grad_norm/small"]) == 0.0


def test_kd_warmup_and_distilled_tasks(slim, digits_batch):
    _, tasks, _, state = slim
    base = SandwichOptions(num_random=1, cikd_weight=0.0, kd_warmup_steps=4, kd_tasks=("parity",))
    _, at0 = _step(slim, base)(state(0), digits_batch, jax.random.PRNGKey(3))
    _, at4 = _step(slim, base)(state(4), digits_batch, jax.random.PRNGKey(3))
    assert float(at0["kd_ramp"]) == 0.0 and float(at4["kd_ramp"]) == 1.0
    # KD off at step 0: the sub-configs add nothing but their (zero-weight) terms
    assert float(at0["grad_norm/small"]) == pytest.approx(0.0, abs=1e-7) and float(at4["grad_norm/small"]) > 0
    # only the parity task is distilled: the KD term is its per-task value
    assert float(at4["loss/kd"]) == pytest.approx(float(at4["loss/kd/parity_small"]), rel=1e-5)
    assert float(at4["loss/kd/digit_small"]) > 0


@pytest.mark.slow
def test_progressive_shrinking_resumes_exactly_across_a_stage_boundary(tmp_path):
    from .test_sandwich_training import _tiny, assert_resume_is_exact

    def config():
        c = _tiny()
        c.slim.inplace_kd_weight, c.slim.cikd_weight, c.slim.label_weight_small = 1.0, 0.0, 1.0
        c.slim.kd_depth, c.slim.kd_temperature = "std", 2.0
        c.slim.progressive_opens = (0.5, 0.75, 0.75, 0.75)  # 4 steps: the full config at steps 0-1, widths from 2
        return c

    assert_resume_is_exact(config, tmp_path)  # halts at the boundary; the resumed launch opens the widths

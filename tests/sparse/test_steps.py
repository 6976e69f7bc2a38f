"""The two Sparsifiner train steps on a tiny model, without the trainer (the end-to-end run is in test_stages.py)."""

import types

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from effjax.data.specs import TaskSpec
from effjax.models.elastic_vit import ElasticViT
from effjax.train import optim, sparsifiner_steps, step as step_lib

TASKS = (TaskSpec("digit", "classification", 10), TaskSpec("depth", "depth"))


def _setup():
    config = ml_collections.ConfigDict()
    config.train = ml_collections.ConfigDict(dict(
        learning_rate=1e-2, schedule="constant", warmup_steps=0, num_steps=10, optimizer="adamw", weight_decay=0.1,
        grad_clip_norm=1.0, init_from=""))
    config.loss = ml_collections.ConfigDict({"task_weights": {}})
    config.sparsifiner = ml_collections.ConfigDict(dict(
        predictor_loss_weight=0.01, distill_logits_weight=0.5, distill_tokens_weight=0.5, train_keep_ratio=0.3,
        train_token_keep_ratio=0.5, teacher_from=""))
    model = ElasticViT(TASKS, patch_size=2, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32, decoder_dim=8,
                       sparse_layers=(0, 1), predictor_channels=4, predictor_token_reduction=4,
                       predictor_top_coefficients=2, token_pruning_layers=(0,))
    tx, schedule = optim.make_optimizer(config.train)
    setup = types.SimpleNamespace(model=model, tx=tx, schedule=schedule, dataset=types.SimpleNamespace(tasks=TASKS))
    state = jax.jit(step_lib.init_state_fn(model, tx, (8, 8, 1), boxed=False))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32),
             "digit": jnp.asarray(rng.integers(0, 10, 8)), "depth": jnp.asarray(rng.normal(size=(8, 8, 8)), jnp.float32)}
    return setup, config, state, batch


def _changed(before, after):
    a, b = flax.traverse_util.flatten_dict(before, sep="/"), flax.traverse_util.flatten_dict(after, sep="/")
    return {p for p in a if not np.array_equal(a[p], b[p])}


def test_stage_one_moves_only_the_predictor_and_lowers_the_distillation_loss():
    setup, config, state, batch = _setup()
    step = jax.jit(sparsifiner_steps.make_predictor_distillation_step(setup, config))
    start, losses = state.params, []
    for _ in range(8):
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
    changed = _changed(start, state.params)
    assert changed and all("/predictor/" in p for p in changed), changed
    assert losses[-1] < losses[0], losses
    assert int(state.skipped_total) == 0


def test_stage_two_moves_only_the_backbone_under_distillation():
    setup, config, state, batch = _setup()
    teacher = state.params
    step = jax.jit(sparsifiner_steps.make_sparse_finetune_step(setup, config, teacher_params=teacher))
    new_state, metrics = step(state, batch, jax.random.PRNGKey(1))
    changed = _changed(teacher, new_state.params)
    assert changed and not any("/predictor/" in p for p in changed), changed
    # student == teacher at the start, but the student is sparse: distillation terms are positive, finite
    for key in ("loss", "loss/distill_logits", "loss/distill_tokens"):
        assert np.isfinite(float(metrics[key])) and float(metrics[key]) > 0, (key, metrics)

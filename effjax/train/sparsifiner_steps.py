"""Train steps of the two Sparsifiner stages (Wei et al., CVPR 2023, Sec. 3.3), for `sparse_vit`.

Stage 1, objective "sparsifiner_predictor": only the connectivity predictors
learn; the backbone is frozen (its updates, weight decay included, are masked to
zero, so it stays the dense model `config.train.init_from` loaded). Loss =
`predictor_loss_weight` (0.01) x mean over layers of the sum-MSE between the
predictor's approximate attention and the dense attention of query rows 1..N-1,
summed over heads and (query, key) pairs and averaged over the batch. With the
backbone frozen, the dense attention of the model itself *is* the teacher's, so
one dense forward pass gives both.

Stage 2, objective "sparsifiner_finetune": the backbone learns with the masks at
rho = `config.sparsifiner.train_keep_ratio` (token keep ratio likewise); the
predictors are frozen (the mask carries no gradient anyway). Loss = task losses
+ `distill_logits_weight` x KL(teacher || student) of every classification and
segmentation output (MSE of depth outputs) + `distill_tokens_weight` x MSE of the
final tokens. The teacher is the dense forward pass (rho = 1) of the parameters in
`config.sparsifiner.teacher_from` (default: `config.train.init_from`), held frozen.

Both steps keep the generic step's contract: `fold_in(rng, step)`, non-finite
updates skipped and counted.
"""

from __future__ import annotations

from typing import Callable

import flax
import jax
import jax.numpy as jnp

from effjax.models.elastic_vit import INTERMEDIATES
from effjax.subnet import SubnetConfig
from effjax.train import losses
from effjax.train.setup import init_params_from, init_state
from effjax.train.state import TrainState
from effjax.train.step import update

PREDICTOR_MODULE = "predictor"


def _sparsifiner_config(config):
    sc = config.get("sparsifiner")
    if sc is None:
        raise ValueError("config.sparsifiner: missing; the Sparsifiner objectives need it (see configs/sparsifiner_digits.py)")
    return sc


def trainable_mask(params, train_predictor: bool):
    """True for the leaves a stage updates: the predictors (stage 1) or everything else (stage 2)."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {path: (PREDICTOR_MODULE in path) == train_predictor for path in flat})


def attention_distillation_loss(intermediates) -> jax.Array:
    """Mean over layers of sum-MSE(approx attention, stop_gradient(dense attention rows 1..N-1)) per example."""
    layers = [v["attention"] for k, v in intermediates.items()
              if k.startswith("block") and "approx_attention" in v.get("attention", {})]  # the sparse layers
    total = jnp.zeros((), jnp.float32)
    for attn in layers:
        approx, dense = attn["approx_attention"][0], jax.lax.stop_gradient(attn["attention"][0])
        total += jnp.sum((approx.astype(jnp.float32) - dense[:, :, 1:].astype(jnp.float32)) ** 2) / approx.shape[0]
    return total / len(layers)


def make_predictor_distillation_step(setup, config) -> Callable:
    """Stage 1 (objective "sparsifiner_predictor")."""
    weight = float(_sparsifiner_config(config).predictor_loss_weight)
    model, tx, schedule = setup.model, setup.tx, setup.schedule

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        mask = trainable_mask(state.params, train_predictor=True)

        def loss_fn(params):
            _, mutated = model.apply({"params": params}, batch["image"], train=True, subnet=SubnetConfig(),
                                     capture=True, rngs={"params": rng, "dropout": rng}, mutable=[INTERMEDIATES])
            mse = attention_distillation_loss(mutated[INTERMEDIATES])
            return weight * mse, mse

        (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return update(state, grads, loss, tx, schedule, {"attention_sum_mse": mse}, trainable=mask)

    return train_step


def distillation_terms(tasks, student, teacher) -> jax.Array:
    """Sum over tasks of KL(teacher || student) (classification, segmentation) or MSE (depth)."""
    total = jnp.zeros((), jnp.float32)
    for t in tasks:
        s, te = student[t.name], jax.lax.stop_gradient(teacher[t.name])
        if t.kind == "depth":
            total += jnp.mean((s - te) ** 2)
        else:
            log_t, log_s = jax.nn.log_softmax(te, -1), jax.nn.log_softmax(s, -1)
            total += jnp.mean(jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1))
    return total


def load_teacher_params(setup, config):
    """Parameters of the teacher run (`sparsifiner.teacher_from`, else `train.init_from`), frozen."""
    source = _sparsifiner_config(config).get("teacher_from", "") or config.train.init_from
    if not source:
        raise ValueError("config.sparsifiner.teacher_from / config.train.init_from: the fine-tuning stage needs the "
                         "workdir of the dense (or stage-1) run as its teacher")
    fresh = init_state(setup, jax.random.PRNGKey(0)).params
    return init_params_from(setup, fresh, source)


def make_sparse_finetune_step(setup, config, teacher_params=None) -> Callable:
    """Stage 2 (objective "sparsifiner_finetune"); `teacher_params` defaults to `load_teacher_params`."""
    sc = _sparsifiner_config(config)
    model, tx, schedule, tasks = setup.model, setup.tx, setup.schedule, setup.dataset.tasks
    task_weights = dict(config.loss.task_weights)
    subnet = SubnetConfig(attention_keep_ratio=float(sc.train_keep_ratio),
                          token_keep_ratio=float(sc.get("train_token_keep_ratio", 1.0)))
    w_logits, w_tokens = float(sc.distill_logits_weight), float(sc.distill_tokens_weight)
    if teacher_params is None:
        teacher_params = load_teacher_params(setup, config)

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        mask = trainable_mask(state.params, train_predictor=False)
        teacher_preds, teacher_vars = model.apply({"params": teacher_params}, batch["image"], train=False,
                                                  subnet=SubnetConfig(), mutable=[INTERMEDIATES])
        teacher_tokens = jax.lax.stop_gradient(teacher_vars[INTERMEDIATES]["tokens"][0])

        def loss_fn(params):
            preds, mutated = model.apply({"params": params}, batch["image"], train=True, subnet=subnet,
                                         rngs={"params": rng, "dropout": rng}, mutable=[INTERMEDIATES])
            task_total, per_task = losses.multitask_loss(tasks, preds, batch, task_weights)
            kd = distillation_terms(tasks, preds, teacher_preds)
            token_mse = jnp.mean((mutated[INTERMEDIATES]["tokens"][0] - teacher_tokens) ** 2)
            total = task_total + w_logits * kd + w_tokens * token_mse
            return total, {**per_task, "distill_logits": kd, "distill_tokens": token_mse}

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return update(state, grads, loss, tx, schedule, parts, trainable=mask)

    return train_step

"""The jitted train and eval steps, with explicit shardings and donation.

Randomness is `fold_in(rng, step)`, so a resumed run draws exactly what an
uninterrupted one would. A step whose loss or gradients are non-finite leaves
parameters and optimizer state untouched and is counted in the state.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from effjax.data.specs import TaskSpec
from effjax.models.layers import AUX_LOSS_COLLECTION
from effjax.train import losses
from effjax.train.state import TrainState


def aux_total(mutated) -> jax.Array:
    """Sum of the auxiliary losses the model sowed (MoE balance / z-loss, predictor distillation)."""
    return sum((jnp.sum(x) for x in jax.tree.leaves(mutated.get(AUX_LOSS_COLLECTION, {}))), jnp.zeros((), jnp.float32))


def init_state_fn(model: nn.Module, tx: optax.GradientTransformation, image_shape, boxed: bool) -> Callable:
    def init(rng):
        images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
        params = model.init({"params": rng}, images)["params"]
        if not boxed:
            params = nn.unbox(params)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(step=zero, params=params, opt_state=tx.init(params), skipped_in_a_row=zero, skipped_total=zero)

    return init


def apply_gradients(state: TrainState, grads, loss: jax.Array, tx: optax.GradientTransformation,
                    trainable=None) -> tuple[TrainState, jax.Array]:
    """One optimizer update; a non-finite loss or gradient leaves params and optimizer state
    unchanged and is counted. `trainable` (a bool tree like params) freezes the False leaves:
    their gradients and updates are zeroed. Returns (new state, global gradient norm)."""
    frozen = lambda tree: tree if trainable is None else jax.tree.map(  # noqa: E731
        lambda x, m: x if m else jnp.zeros_like(x), tree, trainable)
    grads = frozen(grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, frozen(updates))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        skipped_in_a_row=jnp.where(finite, 0, state.skipped_in_a_row + 1),
        skipped_total=state.skipped_total + (~finite).astype(jnp.int32),
    )
    return new_state, grad_norm


def update(state: TrainState, grads, loss: jax.Array, tx: optax.GradientTransformation, schedule: optax.Schedule,
           parts: Mapping[str, jax.Array], trainable=None) -> tuple[TrainState, dict[str, jax.Array]]:
    """`apply_gradients`, and the step's metrics: loss, gradient norm, learning rate and `loss/<k>` for each part."""
    new_state, grad_norm = apply_gradients(state, grads, loss, tx, trainable)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
                       **{f"loss/{k}": v for k, v in parts.items()}}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, tasks: Sequence[TaskSpec],
                    task_weights: Mapping[str, float], schedule: optax.Schedule) -> Callable:
    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            preds, aux = model.apply({"params": params}, batch["image"], train=True,
                                     rngs={"params": rng, "dropout": rng}, mutable=[AUX_LOSS_COLLECTION])
            total, per_task = losses.multitask_loss(tasks, preds, batch, task_weights)
            aux_loss = aux_total(aux)
            return total + aux_loss, {**per_task, "aux": aux_loss}

        (loss, per_task), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return update(state, grads, loss, tx, schedule, per_task)

    return train_step


def make_eval_step(model: nn.Module, tasks: Sequence[TaskSpec], subnet=None) -> Callable:
    """Metric sums of one batch; `subnet` (a SubnetConfig) selects the compressed configuration."""
    extra = {} if subnet is None else {"subnet": subnet}

    def eval_step(params, batch):
        preds = model.apply({"params": params}, batch["image"], train=False, rngs={"params": jax.random.PRNGKey(0)}, **extra)
        return {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]) for t in tasks}

    return eval_step

"""Optimizer and learning-rate schedule from `config.train` (optax)."""

from __future__ import annotations

import optax


def learning_rate_schedule(train_config) -> optax.Schedule:
    peak, warmup, total = float(train_config.learning_rate), int(train_config.warmup_steps), int(train_config.num_steps)
    if train_config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total, warmup + 1), end_value=peak * 0.01)
    if train_config.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)], [warmup])
    raise ValueError(f"config.train.schedule={train_config.schedule!r}: allowed: cosine, constant")


def make_optimizer(train_config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(train_config)
    if train_config.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=float(train_config.weight_decay))
    elif train_config.optimizer == "sgd":
        opt = optax.sgd(schedule, momentum=float(train_config.momentum))
    else:
        raise ValueError(f"config.train.optimizer={train_config.optimizer!r}: allowed: adamw, sgd")
    if train_config.grad_clip_norm and train_config.grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(float(train_config.grad_clip_norm)), opt)
    return opt, schedule

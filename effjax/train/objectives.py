"""Registry of training objectives: how one train step turns a batch into an update.

`config.train.objective` names the builder; each builder takes the `Setup` (model,
optimizer, tasks, ...) and the config and returns a pure
`train_step(state, batch, rng) -> (state, metrics)` that the trainer jits with
explicit shardings and donation. Feature issues (sandwich training of slimmable
subnets, Sparsifiner distillation, MoE routing losses) register their own.
"""

from __future__ import annotations

from typing import Callable

from effjax.train import fixed_subnet, sandwich, sparsifiner_steps
from effjax.train import step as step_lib


def _step_args(setup, config) -> tuple:
    """What the supervised step makers take first: model, optimizer, tasks, task weights, schedule."""
    return setup.model, setup.tx, setup.dataset.tasks, dict(config.loss.task_weights), setup.schedule


_BUILDERS: dict[str, Callable] = {
    "multitask": lambda setup, config: step_lib.make_train_step(*_step_args(setup, config)),
    "sandwich": lambda setup, config: sandwich.make_sandwich_step(  # weights and n from `config.slim`
        *_step_args(setup, config), sandwich.SandwichOptions.from_config(config), int(config.train.num_steps)),
    "fixed_subnet": lambda setup, config: fixed_subnet.make_fixed_subnet_step(  # from `config.train.subnet`
        *_step_args(setup, config), fixed_subnet.subnet_from_config(config)),
    "sparsifiner_predictor": sparsifiner_steps.make_predictor_distillation_step,
    "sparsifiner_finetune": sparsifiner_steps.make_sparse_finetune_step,
}


def build_train_step(setup, config) -> Callable:
    name = config.train.get("objective", "multitask")
    if name not in _BUILDERS:
        raise ValueError(f"config.train.objective={name!r}: unknown objective; allowed: {list(_BUILDERS)}")
    return _BUILDERS[name](setup, config)

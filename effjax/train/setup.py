"""Everything derived from a config before training, and a finished run loaded back.

`build(config)` validates the config, loads the dataset, makes the mesh, the model,
the optimizer and the train state's shardings (a `Setup`, reused by the trainer,
the search, the export and the studies). `init_state` creates a sharded train
state; `init_params_from` fills it from another run's checkpoint. `load_run(workdir)`
is the one way to load a finished run: its `config.json`, a `Setup` and the newest
checkpoint's parameters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from effjax.config import validate
from effjax.data import load_dataset
from effjax.data.specs import Dataset
from effjax.models import build_model
from effjax.train import mesh as mesh_lib
from effjax.train import optim
from effjax.train import step as step_lib
from effjax.train.checkpoint import Checkpointer

log = logging.getLogger("effjax")


@dataclasses.dataclass
class Setup:
    """Everything derived from the config before the loop: reused by tools and evaluation."""

    config: Any
    dataset: Dataset
    mesh: jax.sharding.Mesh
    model: nn.Module
    tx: Any
    schedule: Any
    state_shardings: Any
    abstract_state: Any
    batch_sharding: Any
    rules: tuple


def build(config, devices: Sequence[jax.Device] | None = None, dot_general_provider=None) -> Setup:
    validate.validate_static(config)
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    rules = mesh_lib.rules_tuple(config.logical_axis_rules)
    validate.validate_batch(config, mesh_lib.data_parallel_size(mesh, rules))
    try:
        dataset = load_dataset(config.data)
    except ValueError as e:  # the data sources raise ValueError, not ConfigError
        raise validate.ConfigError(str(e)) from None
    validate.validate_with_data(config, dataset)
    if dot_general_provider is None and "quant" in config:
        from effjax.quant import aqt_config  # AQT loads only for quantized runs

        try:
            dot_general_provider = aqt_config.provider_from_config(config)
        except ValueError as e:
            raise validate.ConfigError(str(e)) from None
    model = build_model(config.model, dataset.tasks, dot_general_provider)
    tx, schedule = optim.make_optimizer(config.train)
    boxed = jax.eval_shape(step_lib.init_state_fn(model, tx, dataset.image_shape, boxed=True), jax.random.PRNGKey(0))
    shardings = mesh_lib.tree_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), shardings)
    return Setup(config, dataset, mesh, model, tx, schedule, shardings, abstract, mesh_lib.batch_sharding(mesh, rules), rules)


def init_state(setup: Setup, rng):
    init = step_lib.init_state_fn(setup.model, setup.tx, setup.dataset.image_shape, boxed=False)
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        return jax.jit(init, out_shardings=setup.state_shardings)(rng)


def init_params_from(setup: Setup, params, workdir: str):
    """Parameters of another run's latest checkpoint, for the paths both models share.

    Used to fine-tune from a float / dense checkpoint (QAT, Sparsifiner). Parameters
    the other model lacks keep their fresh initialization.
    """
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
        raise validate.ConfigError(f"config.train.init_from={workdir!r}: no checkpoint in {directory}")
    source_ckpt = Checkpointer(directory, keep=1, async_save=False)
    step, source_params = source_ckpt.latest_params()
    source_ckpt.close()
    source = flax.traverse_util.flatten_dict(source_params, sep="/")
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    loaded = [p for p, value in flat.items() if p in source and tuple(source[p].shape) == tuple(value.shape)]
    if not loaded:
        raise validate.ConfigError(f"config.train.init_from={workdir!r}: no parameter matches this model's shapes")
    flat.update({p: jax.device_put(jnp.asarray(source[p], flat[p].dtype), flat[p].sharding) for p in loaded})
    log.info("initialized %d of %d parameter arrays from %s step %d", len(loaded), len(flat), directory, step)
    return flax.traverse_util.unflatten_dict(flat, sep="/")


@dataclasses.dataclass
class LoadedRun:
    """A finished `effjax.main` run: its config, a one-device `Setup`, the newest checkpoint step and its parameters."""

    workdir: str
    config: ml_collections.ConfigDict
    setup: Setup
    step: int
    params: Any

    @property
    def tasks(self):
        return self.setup.dataset.tasks


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was launched with (`<workdir>/config.json`)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"--workdir={workdir!r}: no config.json (train it with python -m effjax.main first)")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str, config: Optional[ml_collections.ConfigDict] = None,
             devices: Optional[Sequence[jax.Device]] = None) -> LoadedRun:
    """The run in `workdir`: its config (or `config`), a `Setup` on `devices` (default: the first device) and
    the newest checkpoint's parameters."""
    config = read_run_config(workdir) if config is None else config
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
        raise ValueError(f"--workdir={workdir!r}: no checkpoint in {directory}")
    setup = build(config, jax.devices()[:1] if devices is None else devices)
    checkpointer = Checkpointer(directory, keep=1, async_save=False)
    try:
        step, params = checkpointer.latest_params()
    finally:
        checkpointer.close()
    return LoadedRun(workdir, config, setup, int(step), params)

"""Config validation before anything is compiled: one clear line per mistake.

Every check names the field, the value given and what is allowed, and raises
`ConfigError`; `effjax.main` prints it without a traceback and exits with 2.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile

from effjax.data.registry import DATASET_NAMES
from effjax.data.specs import SPLITS, Dataset
from effjax.models.registry import model_entry
from effjax.models.vit import DTYPES


class ConfigError(ValueError):
    """A config field has a value effjax cannot run with."""


def _require(cond: bool, field: str, value, allowed: str):
    if not cond:
        raise ConfigError(f"config.{field}={value!r}: {allowed}")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(config, field: str):
    value = config[field]  # a ConfigDict reads a dotted path
    _require(isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0, field, value,
             "must be a positive integer")


def validate_static(config) -> None:
    """Checks that need neither devices nor data."""
    _require(config.data.name in DATASET_NAMES, "data.name", config.data.name, f"unknown dataset; allowed: {list(DATASET_NAMES)}")
    try:
        model_entry(config.model)  # imports config.model.module, where a model of your own registers
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _require(config.model.dtype in DTYPES, "model.dtype", config.model.dtype, f"allowed: {list(DTYPES)}")
    lr = config.train.learning_rate
    _require(_is_real(lr) and math.isfinite(lr) and lr > 0, "train.learning_rate", lr, "must be a finite number > 0")
    for field in ("train.batch_size", "train.num_steps", "eval.batch_size", "eval.every_steps", "checkpoint.every_steps",
                  "checkpoint.keep", "log.every_steps", "model.patch_size", "model.hidden_dim", "model.num_layers",
                  "model.num_heads", "model.mlp_dim", "model.decoder_dim"):
        _positive_int(config, field)
    _require(config.train.warmup_steps >= 0, "train.warmup_steps", config.train.warmup_steps, "must be >= 0")
    _require(config.train.optimizer in ("adamw", "sgd"), "train.optimizer", config.train.optimizer, "allowed: adamw, sgd")
    _require(config.train.schedule in ("cosine", "constant"), "train.schedule", config.train.schedule, "allowed: cosine, constant")
    on_change = config.train.get("on_schedule_change", "refuse")
    _require(on_change in ("refuse", "new"), "train.on_schedule_change", on_change, "allowed: refuse, new")
    _require(config.model.hidden_dim % config.model.num_heads == 0, "model.num_heads", config.model.num_heads,
             f"must divide model.hidden_dim={config.model.hidden_dim}")
    _require(config.eval.final_split in SPLITS, "eval.final_split", config.eval.final_split, f"allowed: {list(SPLITS)}")
    _require(config.profile_steps >= 0, "profile_steps", config.profile_steps, "must be >= 0")
    if "width_menu" in config.model:
        menu = config.model.width_menu
        _require(isinstance(menu, (tuple, list)) and len(menu) > 0 and all(_is_real(w) and 0 < w <= 1 for w in menu),
                 "model.width_menu", menu, "must be a non-empty list of width fractions in (0, 1], e.g. (0.25, 0.5, 1.0)")
    for section, field in (("loss", "task_weights"), ("search", "score_weights")):
        if section in config and field in config[section]:
            for task, weight in config[section][field].items():
                _require(_is_real(weight) and math.isfinite(weight) and weight >= 0, f"{section}.{field}.{task}", weight,
                         "must be a finite number >= 0")
    if config.data.name == "shapes":
        for field in ("data.image_size", "data.num_train", "data.num_val", "data.num_test"):
            _positive_int(config, field)


def validate_batch(config, data_parallel: int) -> None:
    for field in ("train.batch_size", "eval.batch_size"):
        _require(config[field] % data_parallel == 0, field, config[field],
                 f"must be divisible by the data-parallel size {data_parallel} (mesh data x fsdp)")


def validate_with_data(config, dataset: Dataset) -> None:
    h, w, _ = dataset.image_shape
    p = config.model.patch_size
    _require(h % p == 0 and w % p == 0, "model.patch_size", p, f"must divide the image size {h}x{w} of dataset {dataset.name!r}")
    names = [t.name for t in dataset.tasks]
    for task in config.loss.task_weights:
        _require(task in names, f"loss.task_weights.{task}", config.loss.task_weights[task], f"unknown task; dataset tasks: {names}")
    _require(dataset.num_examples("train") >= config.train.batch_size, "train.batch_size", config.train.batch_size,
             f"larger than the {dataset.num_examples('train')} training examples")


def check_workdir(workdir: str) -> None:
    """Creates `workdir` if needed; a path that cannot be a writable directory raises ConfigError."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--workdir={workdir}: is a file, not a directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"--workdir={workdir}: {parent} is a file, so no directory can be created under it")
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".effjax-write-test-")
        probe.close()
    except OSError as e:
        raise ConfigError(f"--workdir={workdir}: not a writable directory ({e.strerror or type(e).__name__})") from None

"""TensorBoard event files (scalars, images, hparams), written by JAX process 0 only, and their tag scheme.

Every scalar tag reads `<split>/<task>/<metric>`, or `<split>/<metric>` for what belongs to no
one task: `train/loss`, `train/learning_rate`, `train/grad_norm`, `train/digit/loss`,
`train/loss/<part>` (parts of a composite objective), `train/step_time_s`, `val/digit/accuracy`,
`val/depth/rmse`, `test/segmentation/miou`, `search/hypervolume`, `search/best_score`.
A run writes one hparams session.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import jax
import numpy as np


def train_tags(values: Mapping[str, float], task_names: Sequence[str]) -> dict[str, float]:
    """A train step's metrics under `train/`: `loss/<task>` -> `train/<task>/loss`, others keep their name."""
    per_task = {f"loss/{name}": f"train/{name}/loss" for name in task_names}
    return {per_task.get(name, f"train/{name}"): value for name, value in values.items()}


def eval_tags(split: str, values: Mapping[str, float], tasks) -> dict[str, float]:
    """A split's metrics, `{task: value}` -> `<split>/<task>/<metric>` (e.g. `val/depth/rmse`); other keys
    (such as `score`) -> `<split>/<key>`."""
    metric = {t.name: t.metric for t in tasks}
    return {f"{split}/{k}/{metric[k]}" if k in metric else f"{split}/{k}": v for k, v in values.items()}


def train_hparams(config) -> dict:
    """The hyperparameters of a training run, for its hparams session."""
    tc = config.train
    return {"model": config.model.name, "data": config.data.name, "hidden_dim": config.model.hidden_dim,
            "num_layers": config.model.num_layers, "learning_rate": tc.learning_rate, "batch_size": tc.batch_size,
            "num_steps": tc.num_steps}


class MetricWriter:
    def __init__(self, logdir: str):
        self.enabled = jax.process_index() == 0
        self._writer = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(logdir, exist_ok=True)
            self._writer = SummaryWriter(logdir=logdir, flush_secs=10)

    def scalars(self, step: int, values: Mapping[str, float]):
        if self.enabled:
            for k, v in values.items():
                self._writer.add_scalar(k, float(v), int(step))

    def image(self, step: int, tag: str, image_hwc: np.ndarray):
        if self.enabled:
            self._writer.add_image(tag, image_hwc, int(step), dataformats="HWC")

    def hparams(self, hparams: Mapping[str, object], metrics: Mapping[str, float]):
        if self.enabled:
            clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
            self._writer.add_hparams(clean, dict(metrics), name="hparams")

    def flush(self):
        if self.enabled:
            self._writer.flush()

    def close(self):
        if self.enabled:
            self._writer.close()

"""TensorBoard event files (scalars, images, hparams), written by JAX process 0 only."""

from __future__ import annotations

import os
from typing import Mapping

import jax
import numpy as np


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

"""Dataset and task descriptions (`registry.py` builds a dataset from its config).

A task is one prediction target per example: an image-level class
(`classification`), a per-pixel class (`segmentation`) or a per-pixel value
(`depth`). Everything downstream (heads, losses, metrics, cost model) reads these.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

TASK_KINDS = ("classification", "segmentation", "depth")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # one of TASK_KINDS
    num_classes: int = 0  # classes for classification/segmentation; 0 for depth
    value_mean: float = 0.0  # depth: training-set mean; heads predict (value - mean) / std
    value_std: float = 1.0  # depth: training-set standard deviation

    @property
    def is_dense(self) -> bool:
        return self.kind in ("segmentation", "depth")

    @property
    def out_channels(self) -> int:
        return 1 if self.kind == "depth" else self.num_classes

    @property
    def metric(self) -> str:
        return {"classification": "accuracy", "segmentation": "miou", "depth": "rmse"}[self.kind]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "depth"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """In-memory splits: `splits[split]["image"]` is float32 [N, H, W, C]; one array per task."""

    name: str
    tasks: tuple[TaskSpec, ...]
    splits: Mapping[str, Mapping[str, np.ndarray]]
    preprocessing: str = "none: images are used as stored"  # how raw images became the float32 `image` arrays
    label_names: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # task -> class names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"]["image"].shape[1:])

    def num_examples(self, split: str) -> int:
        return int(self.splits[split]["image"].shape[0])

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> dict[str, np.ndarray]:
    """A fixed permutation cut into train / val / test by the val and test fractions."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * fractions[0])), int(round(n * fractions[1]))
    return {"val": perm[:n_val], "test": perm[n_val : n_val + n_test], "train": perm[n_val + n_test :]}


def with_value_statistics(tasks: tuple[TaskSpec, ...], train: Mapping[str, np.ndarray]) -> tuple[TaskSpec, ...]:
    """Depth tasks get the training split's mean/std so heads can predict normalized values."""
    def with_statistics(t: TaskSpec, v: np.ndarray) -> TaskSpec:
        return dataclasses.replace(t, value_mean=float(v.mean()), value_std=float(max(v.std(), 1e-6)))

    return tuple(with_statistics(t, np.asarray(train[t.name], np.float64)) if t.kind == "depth" else t for t in tasks)


def split_sizes(ds: Dataset) -> dict[str, int]:
    return {s: int(ds.splits[s]["image"].shape[0]) for s in SPLITS if s in ds.splits}

"""The 1,797 real 8x8 handwritten digits bundled with scikit-learn, as a multi-task dataset.

Tasks per image: `digit` (10 classes), `parity` (odd/even) and `ge5` (digit >= 5).
The train/val/test split is a fixed permutation (seed 0, 300 val, 300 test), so
every run and every paper reproduction here sees the same examples.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from effjax.data.specs import Dataset, TaskSpec, split_indices

TASKS = (
    TaskSpec("digit", "classification", 10),
    TaskSpec("parity", "classification", 2),
    TaskSpec("ge5", "classification", 2),
)
LABEL_NAMES = {"digit": tuple(str(d) for d in range(10)), "parity": ("even", "odd"), "ge5": ("< 5", ">= 5")}
PREPROCESSING = "sklearn.datasets.load_digits().images (integers 0..16) divided by 16, as float32 [N, 8, 8, 1]"
SPLIT_SEED = 0
VAL_TEST_FRACTIONS = (300 / 1797, 300 / 1797)


def load(data_config=None) -> Dataset:
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[..., None]  # [1797, 8, 8, 1] in [0, 1]
    labels = bunch.target.astype(np.int32)
    columns = {"image": images, "digit": labels, "parity": labels % 2, "ge5": (labels >= 5).astype(np.int32)}
    index = split_indices(len(labels), VAL_TEST_FRACTIONS, SPLIT_SEED)
    splits = {s: {k: v[idx] for k, v in columns.items()} for s, idx in index.items()}
    return Dataset("digits", TASKS, splits, preprocessing=PREPROCESSING, label_names=LABEL_NAMES)

"""The dataset registry: `config.data.name` -> the source that loads it, and the checks every source passes.

`load_dataset(data_config)` loads a source, checks that no split is empty and every task
has one label per image, adds the depth tasks' value statistics and logs the split sizes.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from effjax.data import digits, grain_source, npz_source, shapes, tfds_source, validate
from effjax.data.specs import SPLITS, Dataset, split_sizes, with_value_statistics


SOURCES: dict[str, Callable] = {"digits": digits.load, "shapes": shapes.load, "npz": npz_source.load,
                                "tfds": tfds_source.load, "grain": grain_source.load}
DATASET_NAMES = tuple(SOURCES)


def load_dataset(data_config) -> Dataset:
    if data_config.name not in SOURCES:
        raise ValueError(f"config.data.name={data_config.name!r}: unknown dataset; allowed: {sorted(SOURCES)}")
    ds = SOURCES[data_config.name](data_config)
    validate.check_split_sizes(split_sizes(ds), f"dataset {ds.name}")
    for split in SPLITS:
        arrays = ds.splits[split]
        n = arrays["image"].shape[0]
        for t in ds.tasks:
            if arrays[t.name].shape[0] != n:
                raise ValueError(f"dataset {ds.name}: task {t.name!r} has {arrays[t.name].shape[0]} labels for {n} images")
    ds = dataclasses.replace(ds, tasks=with_value_statistics(ds.tasks, ds.splits["train"]))
    logging.getLogger("effjax").info("data %s: %s examples of %s; images: %s", ds.name, split_sizes(ds),
                                     "x".join(str(d) for d in ds.image_shape), ds.preprocessing)
    return ds

"""The input/output signature an export writes into `model.json`, and the dataset fields that applied.

A model trained on one dataset expects images as that dataset's loader produced them: the
signature states their shape (batch first, `null` = any batch size), dtype, the value range
seen in the training split and the preprocessing that turns raw data into them, and for each
task the output's shape and how to read it (class logits, per-pixel logits or per-pixel
values) with the class names.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from effjax.data.specs import Dataset, TaskSpec

# The `config.data` fields each source reads (the others are defaults that did not apply).
DATA_FIELDS = {"digits": ("name",), "shapes": ("name", "seed", "image_size", "num_train", "num_val", "num_test"),
               "npz": ("name", "path", "tasks", "seed"), "tfds": ("name", "tfds_name"),
               "grain": ("name", "grain_source")}

_READING = {
    "classification": "logits over the classes; argmax over the last axis is the predicted class",
    "segmentation": "per-pixel logits over the classes; argmax over the last axis is each pixel's class",
    "depth": "per-pixel value in the units of the training labels",
}


def data_block(data_config, dataset: Dataset) -> dict:
    """The `config.data` fields this dataset's source used, plus each split's size."""
    config = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
    fields = DATA_FIELDS.get(config.get("name"), tuple(config))
    block = {k: config[k] for k in fields if k in config}
    block["split_sizes"] = {s: dataset.num_examples(s) for s in dataset.splits}
    return block


def _output(task: TaskSpec, shape: Sequence[int], label_names: Sequence[str] | None) -> dict:
    out = {"task": task.name, "kind": task.kind, "shape": [None] + [int(d) for d in shape[1:]], "dtype": "float32",
           "reading": _READING[task.kind], "metric": task.metric}
    if task.kind != "depth":
        out["labels"] = list(label_names) if label_names else [str(i) for i in range(task.num_classes)]
    return out


def input_signature(dataset: Dataset) -> dict:
    """The images a model trained on `dataset` takes."""
    train = np.asarray(dataset.splits["train"]["image"])
    return {"name": "images", "shape": [None] + [int(d) for d in train.shape[1:]], "dtype": "float32", "layout": "NHWC",
            "value_range": [float(train.min()), float(train.max())], "preprocessing": dataset.preprocessing}


def output_signature(tasks: Sequence[TaskSpec], output_shapes: Mapping[str, Sequence[int]],
                     label_names: Mapping[str, Sequence[str]]) -> list[dict]:
    """One entry per task; `output_shapes` at any batch size (the first axis is written as null)."""
    return [_output(t, output_shapes[t.name], label_names.get(t.name)) for t in tasks]

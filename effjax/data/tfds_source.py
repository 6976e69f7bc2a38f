"""Adapter for TensorFlow Datasets (optional; needs `pip install effjax[tfds]` and internet).

Loads an image-classification dataset (`config.data.tfds_name`, e.g. "mnist") into
memory as a single `label` task. Not used by CI; kept small and explicit.
"""

from __future__ import annotations

import numpy as np

from effjax.data.specs import Dataset, TaskSpec


def load(data_config) -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError("config.data.name='tfds' needs tensorflow-datasets: pip install 'effjax[tfds]'") from None
    name = str(data_config.tfds_name)
    builder = tfds.builder(name)
    builder.download_and_prepare()
    num_classes = builder.info.features["label"].num_classes
    splits = {}
    for split, tfds_split in (("train", "train[:90%]"), ("val", "train[90%:]"), ("test", "test")):
        image, label = tfds.as_numpy(builder.as_dataset(split=tfds_split, batch_size=-1, as_supervised=True))
        splits[split] = {"image": image.astype(np.float32) / 255.0, "label": label.astype(np.int32)}
    return Dataset(f"tfds:{name}", (TaskSpec("label", "classification", num_classes),), splits,
                   preprocessing="uint8 pixels divided by 255, as float32 [N, H, W, C]")

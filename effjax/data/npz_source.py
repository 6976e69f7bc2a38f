"""User data from an `.npz` file on disk.

The file holds `image` ([N, H, W] or [N, H, W, C], any numeric type, scaled to
[0, 1] when integer) and one array per task named in `config.data.tasks`, each
task given as "name:kind[:num_classes]" (e.g. "label:classification:10",
"mask:segmentation:5", "z:depth"). Files with `train_`/`val_`/`test_` prefixed
arrays keep their own split; otherwise a fixed seeded split is made.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from effjax.data.specs import TASK_KINDS, Dataset, TaskSpec, split_indices


def parse_task(text: str) -> TaskSpec:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in TASK_KINDS:
        raise ValueError(f"config.data.tasks entry {text!r}: expected 'name:kind[:num_classes]' with kind in {TASK_KINDS}")
    num_classes = int(parts[2]) if len(parts) == 3 else 0
    if parts[1] != "depth" and num_classes < 2:
        raise ValueError(f"config.data.tasks entry {text!r}: a {parts[1]} task needs num_classes >= 2")
    return TaskSpec(parts[0], parts[1], num_classes)


def _as_image(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"npz 'image' must be [N, H, W] or [N, H, W, C], got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(max(np.iinfo(a.dtype).max, 1) if a.max() > 1 else 1)
    return a.astype(np.float32)


def load(data_config) -> Dataset:
    path = str(data_config.path)
    if not path or not os.path.exists(path):
        raise ValueError(f"config.data.path={path!r}: file not found (an .npz with 'image' and task arrays)")
    task_specs = tuple(parse_task(t) for t in data_config.tasks)
    if not task_specs:
        raise ValueError("config.data.tasks is empty: name at least one task as 'name:kind[:num_classes]'")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"config.data.path={path!r}: not a readable .npz file ({type(e).__name__}: {e})") from None
    names = ["image"] + [t.name for t in task_specs]
    if all(f"train_{n}" in arrays for n in names):
        splits = {s: {n: arrays[f"{s}_{n}"] for n in names} for s in ("train", "val", "test")}
    else:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"config.data.path={path!r}: arrays {missing} missing; the file has {sorted(arrays)}")
        index = split_indices(len(arrays["image"]), (0.1, 0.1), int(data_config.seed))
        splits = {s: {n: arrays[n][idx] for n in names} for s, idx in index.items()}
    for split in splits.values():
        split["image"] = _as_image(split["image"])
        for t in task_specs:
            split[t.name] = split[t.name].astype(np.float32 if t.kind == "depth" else np.int32)
    return Dataset("npz", task_specs, splits)

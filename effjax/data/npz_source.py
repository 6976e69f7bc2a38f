"""User data from an `.npz` file on disk (every field: `docs/your_data.md`).

The file holds `image` ([N, H, W] or [N, H, W, C]) and one array per task named in
`config.data.tasks`, each task given as "name:kind[:num_classes]" (e.g. "label:classification:10",
"mask:segmentation:5", "z:depth"). Files with `train_`/`val_`/`test_` prefixed arrays keep
their own split; otherwise a fixed seeded split is made (10% validation, 10% test). An
optional scalar `image_max` sets the pixel scale; otherwise images are scaled by the rule in
`effjax.data.validate`. Every array is checked before anything is split or trained: a bad
value is refused in one line naming the array and its first bad row.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from effjax.data import validate
from effjax.data.specs import SPLITS, TASK_KINDS, Dataset, TaskSpec, split_indices


def parse_task(text: str) -> TaskSpec:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in TASK_KINDS:
        raise ValueError(f"config.data.tasks entry {text!r}: expected 'name:kind[:num_classes]' with kind in {TASK_KINDS}")
    num_classes = int(parts[2]) if len(parts) == 3 else 0
    if parts[1] != "depth" and num_classes < 2:
        raise ValueError(f"config.data.tasks entry {text!r}: a {parts[1]} task needs num_classes >= 2")
    return TaskSpec(parts[0], parts[1], num_classes)


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
    where = f"config.data.path={path!r}"
    image_max = None
    if "image_max" in arrays:
        if np.ndim(arrays["image_max"]) != 0:
            shape = list(np.shape(arrays["image_max"]))
            raise ValueError(f"{where}: array 'image_max' must be a scalar, got shape {shape}")
        image_max = float(arrays["image_max"])
    prefixed = all(f"train_{n}" in arrays for n in names)
    groups = {s: {n: f"{s}_{n}" for n in names} for s in SPLITS} if prefixed else {None: {n: n for n in names}}
    missing = [key for group in groups.values() for key in group.values() if key not in arrays]
    if missing:
        raise ValueError(f"{where}: arrays {missing} missing; the file has {sorted(arrays)}")
    images = [arrays[keys["image"]] for keys in groups.values()]
    largest = max((int(a.max()) for a in images if a.size), default=0) if all(
        a.dtype.kind in "iu" and a.dtype != np.uint8 for a in images) else None
    checked, rules = {}, set()
    for split, keys in groups.items():
        try:
            validate.check_rows({key: arrays[key] for key in keys.values()}, keys["image"])
            image, rule = validate.scale_images(arrays[keys["image"]], f"array {keys['image']!r}", image_max,
                                                largest)
            columns = {"image": image, **{t.name: validate.check_labels(
                arrays[keys[t.name]], t, f"array {keys[t.name]!r}", image.shape[1:3]) for t in task_specs}}
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        checked[split], rules = columns, rules | {rule}
    if prefixed:
        splits = checked
    else:
        index = split_indices(len(checked[None]["image"]), (0.1, 0.1), int(data_config.seed))
        splits = {s: {n: a[idx] for n, a in checked[None].items()} for s, idx in index.items()}
    validate.check_split_sizes({s: len(splits[s]["image"]) for s in SPLITS}, where)
    shapes = {s: splits[s]["image"].shape[1:] for s in splits}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: the splits' images differ in shape: {shapes}")
    return Dataset("npz", task_specs, splits, preprocessing=f"npz 'image': {'; '.join(sorted(rules))}")

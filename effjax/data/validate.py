"""Checks and scaling of user-supplied image and label arrays (the npz and grain sources).

Every refusal is a `ValueError` of one line naming the array and, where it is about values,
the first bad row (0-based, in the array's own row order).

Image scaling rule (what `scale_images` does, in this order):
  1. a positive `image_max` given by the user: images / image_max;
  2. float16/32/64 images: used as they are (they must be finite);
  3. uint8 images: / 255;
  4. bool images: False -> 0, True -> 1;
  5. any other integer dtype (int8..int64, uint16..uint64): must be >= 0, divided by the largest
     value over all splits (e.g. raw sklearn digits, 0..16, are divided by 16).
Complex, string and object arrays are refused.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from effjax.data.specs import TaskSpec


def _first_row(bad: np.ndarray) -> int:
    """The first row (axis 0) with any True in `bad`."""
    return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def scale_images(image: np.ndarray, name: str, image_max: float | None = None,
                 largest: int | None = None) -> tuple[np.ndarray, str]:
    """(float32 [N, H, W, C] images, the rule applied, in words).

    `largest`: for rule 5, the largest value over all splits (default: this array's), so that
    every split is scaled alike."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    if image.ndim != 4:
        raise ValueError(f"{name}: images must be [N, H, W] or [N, H, W, C], got shape {list(image.shape)}")
    kind = image.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"{name}: dtype {image.dtype} is not a number type; store integer or float pixels")
    if kind == "f" and image.size:
        bad = ~np.isfinite(image)
        if bad.any():
            row = _first_row(bad)
            what = "NaN" if np.isnan(image[row]).any() else "infinite"
            raise ValueError(f"{name}: row {row} has {what} pixels ({int(bad.reshape(len(image), -1).any(1).sum())} "
                             f"rows of {len(image)} do)")
    if image_max is not None:
        if not (np.isfinite(image_max) and image_max > 0):
            raise ValueError(f"{name}: image_max={image_max!r} must be a finite number > 0")
        scaled = (image.astype(np.float64) / float(image_max)).astype(np.float32)
        return scaled, f"{image.dtype} divided by image_max={image_max:g}"
    if kind == "f":
        return image.astype(np.float32), f"{image.dtype} used as stored"
    if kind == "b":
        return image.astype(np.float32), "bool as 0 / 1"
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0, "uint8 divided by 255"
    if image.size and image.min() < 0:
        row = _first_row(image < 0)
        raise ValueError(f"{name}: row {row} has negative pixels ({image.dtype}); integer images must be >= 0 "
                         "(store float images for signed data, or give image_max)")
    if largest is None:
        largest = int(image.max()) if image.size else 0
    if largest == 0:
        raise ValueError(f"{name}: every pixel is 0")
    scaled = (image.astype(np.float64) / largest).astype(np.float32)
    return scaled, f"{image.dtype} divided by its largest value {largest}"


def check_labels(labels: np.ndarray, task: TaskSpec, name: str, image_hw: Sequence[int]) -> np.ndarray:
    """A task's target array, checked against the task: int32 classes or float32 values."""
    labels = np.asarray(labels)
    per_pixel = task.is_dense
    want = [-1] + list(image_hw) if per_pixel else [-1]
    shape_ok = labels.ndim == len(want) and all(w in (-1, s) for w, s in zip(want, labels.shape))
    if per_pixel and labels.ndim == 4 and labels.shape[-1] == 1:
        labels, shape_ok = labels[..., 0], tuple(labels.shape[1:3]) == tuple(image_hw)
    if not shape_ok:
        expected = "[N, " + ", ".join(str(d) for d in image_hw) + "]" if per_pixel else "[N]"
        raise ValueError(f"{name}: task {task.name!r} ({task.kind}) needs shape {expected}, got {list(labels.shape)}")
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{name}: dtype {labels.dtype} is not a number type")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels)
        if bad.any():
            raise ValueError(f"{name}: row {_first_row(bad)} is NaN or infinite")
    if task.kind == "depth":
        return labels.astype(np.float32)
    if labels.dtype.kind == "f":
        fractional = labels != np.round(labels)
        if fractional.any():
            row = _first_row(fractional)
            value = labels[row].reshape(-1)[np.argmax(fractional[row].reshape(-1))]
            raise ValueError(f"{name}: row {row} has class label {value.item()!r}; class labels must be whole numbers")
    outside = (labels < 0) | (labels >= task.num_classes)
    if outside.any():
        row = _first_row(outside)
        value = labels[row].reshape(-1)[np.argmax(outside[row].reshape(-1))]
        raise ValueError(f"{name}: row {row} has class {value.item()!r}; task {task.name!r} has classes "
                         f"0..{task.num_classes - 1}"
                         f" ({int(outside.reshape(len(labels), -1).any(1).sum())} rows of {len(labels)} are outside)")
    return labels.astype(np.int32)


def check_rows(arrays: Mapping[str, np.ndarray], image_name: str) -> None:
    """Every array has as many rows as the images."""
    n = len(arrays[image_name])
    for name, array in arrays.items():
        if np.ndim(array) == 0 or len(array) != n:
            rows = "no rows (a scalar)" if np.ndim(array) == 0 else f"{len(array)} rows"
            raise ValueError(f"array {name!r} has {rows}, {image_name!r} has {n}")


def check_split_sizes(sizes: Mapping[str, int], where: str) -> None:
    empty = [s for s, n in sizes.items() if n == 0]
    if empty:
        raise ValueError(f"{where}: split {empty[0]!r} is empty (sizes {dict(sizes)}); "
                         "every split needs at least one example")

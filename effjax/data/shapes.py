"""`shapes`: a procedural multi-task dense-prediction dataset, generated from a seed.

Each scene is an RGB image of 1-4 objects (circle, square, triangle) with random
colour, size, position and depth, painted far-to-near over a tilted background
plane, plus mild pixel noise. Tasks, in the spirit of NYUDv2 / PASCAL-Context at
CPU scale:
  - `segmentation`: per-pixel class (0 background, 1 circle, 2 square, 3 triangle);
  - `depth`: per-pixel distance (background plane or the visible object's depth);
  - `count`: the number of objects, an image-level class (0..3 for 1..4 objects).
Generation is vectorized over scenes and deterministic given (seed, size, counts).
"""

from __future__ import annotations

import numpy as np

from effjax.data.specs import Dataset, TaskSpec

NUM_SHAPE_CLASSES = 3
MAX_OBJECTS = 4


def tasks() -> tuple[TaskSpec, ...]:
    return (
        TaskSpec("segmentation", "segmentation", NUM_SHAPE_CLASSES + 1),
        TaskSpec("depth", "depth"),
        TaskSpec("count", "classification", MAX_OBJECTS),
    )


def generate(num_scenes: int, image_size: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing="ij")
    yy, xx = yy[None] / s, xx[None] / s  # [1, S, S] in (0, 1)

    # Background: a tilted plane, far away (depth 6..10), with a dull colour.
    tilt = rng.uniform(-1.0, 1.0, size=(num_scenes, 2))
    depth = 8.0 + tilt[:, :1, None] * (yy - 0.5) * 2 + tilt[:, 1:, None] * (xx - 0.5) * 2
    image = np.broadcast_to(rng.uniform(0.0, 0.3, size=(num_scenes, 1, 1, 3)), (num_scenes, s, s, 3)).copy()
    segmentation = np.zeros((num_scenes, s, s), np.int32)

    count = rng.integers(1, MAX_OBJECTS + 1, size=num_scenes)
    kind = rng.integers(1, NUM_SHAPE_CLASSES + 1, size=(num_scenes, MAX_OBJECTS))
    radius = rng.uniform(0.12, 0.25, size=(num_scenes, MAX_OBJECTS))
    cy = rng.uniform(0.15, 0.85, size=(num_scenes, MAX_OBJECTS))
    cx = rng.uniform(0.15, 0.85, size=(num_scenes, MAX_OBJECTS))
    obj_depth = rng.uniform(1.0, 5.5, size=(num_scenes, MAX_OBJECTS))
    colour = rng.uniform(0.35, 1.0, size=(num_scenes, MAX_OBJECTS, 3))

    # Paint far-to-near so nearer objects occlude farther ones.
    order = np.argsort(-obj_depth, axis=1)
    for slot in range(MAX_OBJECTS):
        o = order[:, slot]
        pick = lambda a: np.take_along_axis(a, o[:, None], axis=1)[:, 0]  # noqa: E731
        k, r, y0, x0, d = pick(kind), pick(radius), pick(cy), pick(cx), pick(obj_depth)
        col = colour[np.arange(num_scenes), o]
        dy, dx = yy - y0[:, None, None], xx - x0[:, None, None]
        r3 = r[:, None, None]
        circle = dy**2 + dx**2 <= r3**2
        square = (np.abs(dy) <= r3 * 0.85) & (np.abs(dx) <= r3 * 0.85)
        triangle = (dy <= r3 * 0.8) & (dy >= -r3) & (np.abs(dx) <= (dy + r3) * 0.6)
        k3 = k[:, None, None]
        mask = np.where(k3 == 1, circle, np.where(k3 == 2, square, triangle))
        mask &= (o < count)[:, None, None]
        segmentation = np.where(mask, k3, segmentation)
        depth = np.where(mask, d[:, None, None], depth)
        image = np.where(mask[..., None], col[:, None, None, :], image)

    image = np.clip(image + rng.normal(0.0, 0.03, size=image.shape), 0.0, 1.0)
    return {
        "image": image.astype(np.float32),
        "segmentation": segmentation.astype(np.int32),
        "depth": depth.astype(np.float32),
        "count": (count - 1).astype(np.int32),
    }


def load(data_config) -> Dataset:
    seed, size = int(data_config.seed), int(data_config.image_size)
    counts = {"train": int(data_config.num_train), "val": int(data_config.num_val), "test": int(data_config.num_test)}
    # Each split from its own stream, so changing one split's size leaves the others unchanged.
    splits = {name: generate(n, size, seed * 1000 + i) for i, (name, n) in enumerate(counts.items())}
    return Dataset("shapes", tasks(), splits, preprocessing="generated as float32 RGB in [0, 1]; no preprocessing",
                   label_names={"segmentation": ("background", "circle", "square", "triangle"),
                                "count": tuple(f"{n} objects" for n in range(1, MAX_OBJECTS + 1))})

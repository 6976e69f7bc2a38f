"""Your own data as grain `RandomAccessDataSource`s (every field: `docs/your_data.md`).

`config.data.name = "grain"` and `config.data.grain_source = "my_package.my_data:make_sources"`
name a function `make_sources(data_config) -> GrainSources`, imported by its module path as a
config names a model. Each of its three sources (train, val, test) is anything with `__len__`
and `__getitem__(i) -> {"image": array, <task name>: label, ...}`, e.g. a
`grain.sources.ArrayRecordDataSource` or a class of your own. The records are read once into
memory and checked and scaled exactly as the npz source's arrays (`effjax.data.validate`); the
training pipeline is then the same grain `MapDataset` as for every other source.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import numpy as np

from effjax.data import validate
from effjax.data.specs import SPLITS, Dataset, TaskSpec


@dataclasses.dataclass(frozen=True)
class GrainSources:
    train: Any  # a RandomAccessDataSource: len(source), source[i] -> {"image": ..., task: ...}
    val: Any
    test: Any
    tasks: tuple[TaskSpec, ...]  # the targets each record holds, by name
    image_max: float | None = None  # pixel scale; None: the rule of `effjax.data.validate.scale_images`
    preprocessing: str = ""  # how your raw data became the records' images (written into exports' model.json)
    label_names: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # task -> class names


def _factory(target: str):
    where = f"config.data.grain_source={target!r}"
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{where}: expected 'module.path:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{where}: cannot import {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{where}: module {module_name!r} has no function {attr!r}")
    return factory


def _read(source, split: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every record of one source, stacked per field."""
    columns: dict[str, list] = {n: [] for n in names}
    for i in range(len(source)):
        record = source[i]
        missing = [n for n in names if n not in record]
        if missing:
            raise ValueError(f"{split} source: record {i} lacks {missing}; it has {sorted(record)}")
        for n in names:
            columns[n].append(np.asarray(record[n]))
    for n, values in columns.items():
        odd = next((i for i, v in enumerate(values) if v.shape != values[0].shape), None)
        if odd is not None:
            raise ValueError(f"{split} source: record {odd} has {n!r} of shape {list(values[odd].shape)}, "
                             f"record 0 has {list(values[0].shape)}")
    return {n: np.stack(v) if v else np.zeros((0,)) for n, v in columns.items()}


def load(data_config) -> Dataset:
    target = str(data_config.get("grain_source", "") or "")
    sources = _factory(target)(data_config)
    where = f"config.data.grain_source={target!r}"
    if not isinstance(sources, GrainSources):
        raise ValueError(f"{where}: returned {type(sources).__name__}, expected effjax.data.grain_source.GrainSources")
    names = ("image",) + tuple(t.name for t in sources.tasks)
    try:
        raw = {split: _read(getattr(sources, split), split, names) for split in SPLITS}
        validate.check_split_sizes({s: len(raw[s]["image"]) for s in SPLITS}, "sources")
        images = [raw[s]["image"] for s in SPLITS]
        largest = max(int(a.max()) for a in images) if all(
            a.dtype.kind in "iu" and a.dtype != np.uint8 for a in images) else None
        splits, rules = {}, set()
        for split in SPLITS:
            image, rule = validate.scale_images(raw[split]["image"], f"{split} source 'image'", sources.image_max,
                                                largest)
            splits[split] = {"image": image, **{t.name: validate.check_labels(raw[split][t.name], t, f"{split} source "
                                                                              f"{t.name!r}", image.shape[1:3])
                                                for t in sources.tasks}}
            rules.add(rule)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    preprocessing = "; ".join(p for p in (sources.preprocessing, "records' 'image': " + "; ".join(sorted(rules))) if p)
    return Dataset("grain", tuple(sources.tasks), splits, preprocessing=preprocessing,
                   label_names=dict(sources.label_names))

"""Export a subnet of a slimmable supernet as a small standalone model, and load it back.

The subnet's active parameters are found from each parameter's logical axis names
(`embed` -> active token width, `heads` -> active heads x head size, `mlp` ->
active MLP width, `decoder` -> that task's decoder width; other axes stay whole),
sliced out as prefixes (the MoE axes `expert` / `expert_mlp` stay whole), and
kernels (Dense and MoE expert kernels) are quantized to the subnet's bits per layer
group (`weight_quant`) with the per-column scales of the full max-width kernel (the
numbers quantization-aware training, `effjax.compress.qat`, and zero-shot evaluation
use); the active prefix of codes and scales is written. The export is `model.bin` (sliced arrays: float32, int8,
or packed int4 with scales) plus `model.json` (model config, tasks, subnet, and the
bits count). The weights are one raw little-endian byte stream, `model.bin`, with
each array's offset, dtype and shape in `model.json`, so the bytes on disk are the
bits objective / 8 (plus at most half a byte of int4 padding per array). `load` rebuilds the model family's module, zero-pads the slices to
the full shapes (prefix slicing reads only the active part, so padding is exact)
and runs it at the same subnet: the exported model computes what the supernet
computed for that configuration, without the supernet's checkpoint or the search.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import flax
import numpy as np

from effjax.compress.cost_slim import slim_widths
from effjax.compress.subnet import SubnetConfig
from effjax.compress.weight_quant import (dequantize_kernel, fake_quantize, is_kernel, pack_int4, payload_bits,
                                         quantize_kernel, unpack_int4)
from effjax.data.specs import TaskSpec

FORMAT_VERSION = 1


def layer_group(path: str) -> str:
    """The layer group of a parameter path, as the subnet's bits are assigned."""
    parts = path.split("/")
    if any(p.startswith("heads_") or p.startswith("head_") for p in parts):
        return "head"
    if "patch_embed" in parts:
        return "embed"
    if "attention" in parts:
        return "attention"
    if "mlp" in parts:
        return "mlp"
    return "other"


def _task_of(path: str, tasks: Sequence[TaskSpec]) -> str | None:
    for part in path.split("/"):
        for t in tasks:
            if part in (f"heads_{t.name}", f"head_{t.name}"):
                return t.name
    return None


@dataclasses.dataclass(frozen=True)
class ParamPlan:
    path: str
    full_shape: tuple[int, ...]
    active_shape: tuple[int, ...]
    bits: int  # 32: float32; 8 / 4: integer codes with per-column scales


def plan(boxed_abstract_params, model_config, tasks: Sequence[TaskSpec], subnet: SubnetConfig) -> list[ParamPlan]:
    """What each parameter contributes to the subnet: active prefix shape and storage bits."""
    widths = slim_widths(model_config, tasks, SubnetConfig(encoder_width=subnet.encoder_width,
                                                           decoder_widths=subnet.decoder_widths))
    decoders = dict(widths.decoders)
    flat = flax.traverse_util.flatten_dict(boxed_abstract_params, sep="/")
    plans = []
    for path, leaf in sorted(flat.items()):
        names = getattr(leaf, "names", (None,) * len(leaf.value.shape))
        shape = tuple(leaf.value.shape)
        task = _task_of(path, tasks)
        sizes = {"embed": widths.hidden, "heads": widths.heads * widths.head_dim, "mlp": widths.mlp,
                 "decoder": decoders.get(task)}
        active = tuple(min(sizes.get(n) or dim, dim) for n, dim in zip(names, shape))
        weight_bits, _ = subnet.bits_for(layer_group(path))
        bits = weight_bits if is_kernel(path, len(shape)) else 32
        plans.append(ParamPlan(path, shape, active, bits))
    return plans


def total_bits(plans: Sequence[ParamPlan]) -> int:
    return sum(payload_bits(p.active_shape, p.bits) for p in plans)


def _slice(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(x)[tuple(slice(0, s) for s in shape)]


def quantized_params(params, plans: Sequence[ParamPlan]):
    """The full-shape parameter tree the subnet sees after quantization (for zero-shot evaluation)."""
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    out = {}
    for p in plans:
        full = np.array(flat[p.path], np.float32)
        out[p.path] = fake_quantize(full, p.bits) if p.bits < 32 else full
    return flax.traverse_util.unflatten_dict(out, sep="/")


def write(directory: str, params, plans: Sequence[ParamPlan], metadata: Mapping[str, Any]) -> dict:
    """Writes model.bin + model.json; returns the metadata written (with sizes)."""
    os.makedirs(directory, exist_ok=True)
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    chunks, index, offset = [], [], 0

    def add(name: str, array: np.ndarray):
        nonlocal offset
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        index.append({"name": name, "dtype": array.dtype.str.lstrip("<>|="), "shape": list(array.shape),
                      "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)

    for p in plans:
        full = np.asarray(flat[p.path], np.float32)
        if p.bits < 32:  # the full kernel's per-column scales, as training and zero-shot evaluation use
            q, scale = quantize_kernel(full, p.bits)
            q, scale = _slice(q, p.active_shape), _slice(scale, p.active_shape[:-2] + p.active_shape[-1:])
            add(p.path + (":q" if p.bits == 8 else ":q4"), q if p.bits == 8 else pack_int4(q))
            add(p.path + ":scale", scale)
        else:
            add(p.path, _slice(full, p.active_shape))
    binary = os.path.join(directory, "model.bin")
    with open(binary, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    meta = dict(metadata)
    meta.update({
        "format_version": FORMAT_VERSION,
        "params": [{"path": p.path, "full_shape": list(p.full_shape), "active_shape": list(p.active_shape), "bits": p.bits}
                   for p in plans],
        "arrays": index,
        "payload_bits": total_bits(plans),
        "bin_bytes": os.path.getsize(binary),
    })
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def _read_arrays(directory: str, index) -> dict[str, np.ndarray]:
    with open(os.path.join(directory, "model.bin"), "rb") as f:
        blob = f.read()
    expected = sum(a["nbytes"] for a in index)
    if len(blob) != expected:
        raise ValueError(f"{directory}/model.bin has {len(blob)} bytes, model.json describes {expected}")
    return {a["name"]: np.frombuffer(blob, dtype=np.dtype(a["dtype"]).newbyteorder("<"), count=int(np.prod(a["shape"])),
                                     offset=a["offset"]).reshape(a["shape"]) for a in index}


class ExportedModel:
    """A loaded export: `predict(images) -> {task: prediction}` at the exported subnet."""

    def __init__(self, directory: str):
        import jax
        import ml_collections

        from effjax.models import build_model

        with open(os.path.join(directory, "model.json")) as f:
            self.meta = json.load(f)
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: export format {self.meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        self.tasks = tuple(TaskSpec(**t) for t in self.meta["tasks"])
        self.subnet = SubnetConfig.from_dict(self.meta["subnet"])
        self.model_config = ml_collections.ConfigDict(self.meta["model_config"])
        arrays = _read_arrays(directory, self.meta["arrays"])
        flat = {}
        for p in self.meta["params"]:
            key, shape, full = p["path"], tuple(p["active_shape"]), tuple(p["full_shape"])
            if p["bits"] == 8:
                value = dequantize_kernel(arrays[key + ":q"], arrays[key + ":scale"])
            elif p["bits"] == 4:
                value = dequantize_kernel(unpack_int4(arrays[key + ":q4"], shape), arrays[key + ":scale"])
            else:
                value = arrays[key]
            padded = np.zeros(full, np.float32)
            padded[tuple(slice(0, s) for s in shape)] = value
            flat[p["path"]] = padded
        self.params = flax.traverse_util.unflatten_dict(flat, sep="/")
        model = build_model(self.model_config, self.tasks)
        subnet = self.subnet.without_bits()
        self._apply = jax.jit(lambda params, images: model.apply({"params": params}, images, subnet=subnet))

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import jax

        return jax.device_get(self._apply(self.params, np.asarray(images, np.float32)))


def load(directory: str) -> ExportedModel:
    return ExportedModel(directory)

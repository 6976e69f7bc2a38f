"""Export a subnet of a slimmable supernet as a small standalone model, and load it back.

The subnet's active parameters are found from each parameter's logical axis names
(`embed` -> active token width, `heads` -> active heads x head size, `mlp` ->
active MLP width, `decoder` -> that task's decoder width; inside a task's decoder blocks
`heads` and `mlp` follow that task's decoder width; other axes stay whole),
sliced out as prefixes (the MoE axes `expert` / `expert_mlp` stay whole), and
kernels (Dense and MoE expert kernels) are quantized to the subnet's bits per layer
group (`weight_quant`) with the per-column scales of the full max-width kernel (the
numbers quantization-aware training, `effjax.compress.qat`, and zero-shot evaluation
use); the active prefix of codes and scales is written. The export is `model.bin` (sliced arrays: float32, int8,
or packed int4 with scales) plus `model.json` (model config, tasks, subnet, and the
bits count). The weights are one raw little-endian byte stream, `model.bin`, with
each array's offset, dtype and shape in `model.json`, so the bytes on disk are the
bits objective / 8 (plus at most half a byte of int4 padding per array); `model.json` also
records model.bin's sha256. `load` checks the directory (every refusal one `ExportError` line:
missing or changed files, shapes or bits that do not match the model at its subnet), keeps the
parameters at their true widths and runs the model family's module at the same subnet through
`standalone.StandaloneModel` (which hands each layer its true-width slice): the exported model
computes what the supernet computed for that configuration, without the supernet's checkpoint
or the search. `artifacts.py` adds the safetensors file and the `jax.export` artifact.

PVQ kernels (format version 2; van der Ouderaa et al. 2024, `effjax.quant.pvq`): with a
`PVQSpec` passed to `plan`, the body kernels (every kernel outside the 'embed' and
'head' groups, which stay integer at the subnet's `first_last_bits`) are PVQ-coded
after training. Unlike the integer path, PVQ codes the subnet's ACTIVE slice of each
kernel (its groups, gain codebook and optional rotation are those of the slice; a
3-D expert kernel [E, in, out] is E matrices, each with its own codebook), so zero-shot
evaluation and export quantize the same matrix. Three arrays per matrix go into
`model.bin`: `<path>:pvq_index` (uint8: Fischer indices at ceil(log2 N(L, K)) bits each,
MSB first), `<path>:pvq_scale` (uint8: b_s-bit gain codes) and `<path>:pvq_codebook`
(float32: 2^b_s gain levels); for expert kernels each has a leading expert axis. The
bits objective of a PVQ kernel is exactly those bytes * 8 (`pvq_payload_bits`: each
code stream of each matrix padded to whole bytes, the codebook included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping, Optional, Sequence

import flax
import numpy as np

from effjax.compress.weight_quant import dequantize_kernel, is_kernel, payload_bits, quantize_kernel
from effjax.quant.rtn import fake_quantize, pack_int4, unpack_int4
from effjax.data.specs import TaskSpec
from effjax.models import param_names
from effjax.quant.pvq import PVQSpec, QuantizedMatrix, dequantize_matrix, quantize_matrix
from effjax.quant.pvq.packing import decode_layer, layer_payload
from effjax.subnet import SubnetConfig, slim_widths

# 3: version 2 plus model.bin's sha256 and the input/output signature; 4: parameter paths in naming scheme 2
# (`param_names`) for every model. 1-3 still load, their paths through the rename map.
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
PVQ_BITS = 0  # ParamPlan.bits of a PVQ-coded kernel (its `pvq` spec says how)
PVQ_STREAMS = ("pvq_index", "pvq_scale", "pvq_codebook")  # a PVQ kernel's arrays, as `layer_payload` packs them
PVQ_DTYPES = (np.uint8, np.uint8, "<f4")


def _in_block(path: str) -> bool:
    """A parameter of a transformer block (encoder `blocks_<i>`, or a task's decoder block `block<j>`)."""
    return any(p.startswith("block") for p in path.split("/"))


def layer_group(path: str) -> str:
    """The layer group of a parameter path, as the subnet's bits are assigned. A task's decoder blocks
    (`heads_<task>/block<j>/...`) are body layers, as the cost model and the AQT provider group them."""
    parts = path.split("/")
    if not _in_block(path) and any(p.startswith("heads_") for p in parts):
        return "head"
    if "embedding" in parts or "patch_embed" in parts:  # the patch stem, however many layers it has
        return "embed"
    if "attention" in parts:
        return "attention"
    if "mlp" in parts:
        return "mlp"
    return "other"


def _task_of(path: str, tasks: Sequence[TaskSpec]) -> str | None:
    heads = {f"heads_{t.name}": t.name for t in tasks}
    return next((heads[part] for part in path.split("/") if part in heads), None)


@dataclasses.dataclass(frozen=True)
class ParamPlan:
    path: str
    full_shape: tuple[int, ...]
    active_shape: tuple[int, ...]
    bits: int  # 32: float32; 8 / 4: integer codes with per-column scales; PVQ_BITS: PVQ-coded (see pvq)
    pvq: Optional[PVQSpec] = None


@dataclasses.dataclass(frozen=True)
class ParamSlot:
    """What `plan` needs of one parameter that no subnet changes: its path, logical axes, shape and role."""

    path: str
    names: tuple
    shape: tuple[int, ...]
    task: str | None  # the task whose head holds it
    in_block: bool
    group: str  # `layer_group`
    kernel: bool  # quantized (`is_kernel`)


def param_slots(boxed_abstract_params, tasks: Sequence[TaskSpec]) -> tuple[ParamSlot, ...]:
    """The supernet's parameters in path order, read once; `plan_slots` prices any subnet from them."""
    slots = []
    for path, leaf in sorted(flax.traverse_util.flatten_dict(boxed_abstract_params, sep="/").items()):
        shape = tuple(leaf.value.shape)
        slots.append(ParamSlot(path, tuple(getattr(leaf, "names", (None,) * len(shape))), shape, _task_of(path, tasks),
                               _in_block(path), layer_group(path), is_kernel(path, len(shape))))
    return tuple(slots)


def plan(boxed_abstract_params, model_config, tasks: Sequence[TaskSpec], subnet: SubnetConfig,
         pvq: Optional[PVQSpec] = None) -> list[ParamPlan]:
    """What each parameter contributes to the subnet: active prefix shape and storage bits (`plan_slots`)."""
    return plan_slots(param_slots(boxed_abstract_params, tasks), model_config, tasks, subnet, pvq)


def plan_slots(slots: Sequence[ParamSlot], model_config, tasks: Sequence[TaskSpec], subnet: SubnetConfig,
               pvq: Optional[PVQSpec] = None) -> list[ParamPlan]:
    """`plan` from the supernet's `param_slots`.

    With `pvq`, body kernels are PVQ-coded and the 'embed' / 'head' kernels take the
    subnet's `first_last_bits` (it must be set: the first and last layers stay integer)."""
    if pvq is not None and subnet.first_last_bits is None:
        raise ValueError("SubnetConfig.first_last_bits=None: a PVQ point keeps the patch embedding and heads integer; "
                         "allowed: 2, 4, 8")
    widths = slim_widths(model_config, tasks, SubnetConfig(encoder_width=subnet.encoder_width,
                                                           decoder_widths=subnet.decoder_widths))
    decoders = dict(widths.decoders)
    decoder_blocks = {task: (heads, mlp) for task, heads, mlp in widths.decoder_blocks}
    plans = []
    for slot in slots:
        heads, mlp = widths.heads, widths.mlp
        if slot.task is not None and slot.in_block:  # a task decoder block: its heads and MLP follow the decoder width
            heads, mlp = decoder_blocks[slot.task]
        sizes = {"embed": widths.hidden, "heads": heads * widths.head_dim, "mlp": mlp, "decoder": decoders.get(slot.task)}
        active = tuple(min(sizes.get(n) or dim, dim) for n, dim in zip(slot.names, slot.shape))
        if pvq is not None and slot.kernel:
            plans.append(ParamPlan(slot.path, slot.shape, active, subnet.first_last_bits)
                         if slot.group in ("embed", "head") else ParamPlan(slot.path, slot.shape, active, PVQ_BITS, pvq))
            continue
        plans.append(ParamPlan(slot.path, slot.shape, active, subnet.bits_for(slot.group)[0] if slot.kernel else 32))
    return plans


def _nbytes(bits: int) -> int:
    return (bits + 7) // 8


def pvq_payload_bits(shape: tuple[int, ...], spec: PVQSpec) -> int:
    """Bits written for one PVQ-coded kernel [in, out] or [E, in, out]: per matrix, the byte-padded
    index and gain-code streams plus the float32 codebook (`QuantizedMatrix.storage_bits`)."""
    *experts, rows, cols = shape
    groups = -(-rows // spec.group_size) * cols
    per_matrix = 8 * (_nbytes(groups * spec.index_bits) + _nbytes(groups * spec.scale_bits)) + 32 * 2**spec.scale_bits
    return int(np.prod(experts, dtype=np.int64)) * per_matrix


def plan_bits(p: ParamPlan) -> int:
    return pvq_payload_bits(p.active_shape, p.pvq) if p.pvq is not None else payload_bits(p.active_shape, p.bits)


def total_bits(plans: Sequence[ParamPlan]) -> int:
    return sum(plan_bits(p) for p in plans)


def _slice(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(x)[tuple(slice(0, s) for s in shape)]


def pvq_matrices(params_flat: Mapping[str, Any], p: ParamPlan, cache: dict | None = None) -> list[QuantizedMatrix]:
    """The PVQ codes of a plan entry's active slice: one QuantizedMatrix, or one per expert.

    `cache` (a dict owned by the caller, for one parameter tree) reuses the codes of a slice that
    several subnets share; evaluation and export then read the very same codes."""
    key = (p.path, p.active_shape, p.pvq)
    if cache is not None and key in cache:
        return cache[key]
    active = _slice(np.asarray(params_flat[p.path], np.float32), p.active_shape)
    matrices = [quantize_matrix(m, p.pvq) for m in active.reshape((-1,) + active.shape[-2:])]
    if cache is not None:
        cache[key] = matrices
    return matrices


def pad_to(value: np.ndarray, full_shape: tuple[int, ...]) -> np.ndarray:
    padded = np.zeros(full_shape, np.float32)
    padded[tuple(slice(0, s) for s in value.shape)] = value
    return padded


def _dequantize_pvq(matrices: Sequence[QuantizedMatrix], active_shape: tuple[int, ...]) -> np.ndarray:
    return np.stack([dequantize_matrix(m) for m in matrices]).reshape(active_shape)


def quantized_params(params, plans: Sequence[ParamPlan], pvq_cache: dict | None = None):
    """The full-shape parameter tree the subnet sees after quantization (for zero-shot evaluation).

    PVQ kernels are their dequantized active slice, zero-padded to the full shape, as `load` rebuilds them."""
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    out = {}
    for p in plans:
        if p.pvq is not None:
            out[p.path] = pad_to(_dequantize_pvq(pvq_matrices(flat, p, pvq_cache), p.active_shape), p.full_shape)
            continue
        full = np.array(flat[p.path], np.float32)
        out[p.path] = fake_quantize(full, p.bits) if p.bits < 32 else full
    return flax.traverse_util.unflatten_dict(out, sep="/")


def _pvq_streams(matrices: Sequence[QuantizedMatrix]) -> dict[str, np.ndarray]:
    """The packed arrays of one PVQ kernel (a leading expert axis when there are several matrices)."""
    payloads = zip(*(layer_payload(m) for m in matrices))  # indices, gain codes, codebooks of every matrix
    arrays = [[np.frombuffer(b, dtype) for b in streams] for dtype, streams in zip(PVQ_DTYPES, payloads)]
    return {name: np.stack(a) if len(matrices) > 1 else a[0] for name, a in zip(PVQ_STREAMS, arrays)}


def write(directory: str, params, plans: Sequence[ParamPlan], metadata: Mapping[str, Any],
          pvq_cache: dict | None = None) -> dict:
    """Writes model.bin + model.json; returns the metadata written (with sizes).

    `pvq_cache`: the cache zero-shot evaluation filled (`quantized_params`), to write the codes it evaluated."""
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
        if p.pvq is not None:
            for suffix, array in _pvq_streams(pvq_matrices(flat, p, pvq_cache)).items():
                add(f"{p.path}:{suffix}", array)
            continue
        full = np.asarray(flat[p.path], np.float32)
        if p.bits < 32:  # the full kernel's per-column scales, as training and zero-shot evaluation use
            q, scale = quantize_kernel(full, p.bits)
            q, scale = _slice(q, p.active_shape), _slice(scale, p.active_shape[:-2] + p.active_shape[-1:])
            add(p.path + (":q" if p.bits == 8 else ":q4"), q if p.bits == 8 else pack_int4(q))
            add(p.path + ":scale", scale)
        else:
            add(p.path, _slice(full, p.active_shape))
    blob = b"".join(chunks)
    with open(os.path.join(directory, "model.bin"), "wb") as f:
        f.write(blob)
    meta = dict(metadata)
    meta.update({
        "format_version": FORMAT_VERSION,
        "params": [{"path": p.path, "full_shape": list(p.full_shape), "active_shape": list(p.active_shape),
                    "bits": "pvq" if p.pvq is not None else p.bits,
                    **({"pvq": dataclasses.asdict(p.pvq)} if p.pvq is not None else {})} for p in plans],
        "arrays": index,
        "payload_bits": total_bits(plans),
        "bin_bytes": len(blob),
        "bin_sha256": hashlib.sha256(blob).hexdigest(),
    })
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


class ExportError(ValueError):
    """A damaged or inconsistent export directory (one line naming the file and field)."""


def _read_meta(directory: str) -> dict:
    path = os.path.join(directory, "model.json")
    if not os.path.isfile(path):
        raise ExportError(f"{path}: not found (an export directory holds model.json and model.bin)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ExportError(f"{path}: format_version={meta.get('format_version')!r}; readable: {list(READABLE_VERSIONS)}")
    missing = [k for k in ("model_config", "tasks", "subnet", "params", "arrays") if k not in meta]
    if missing:
        raise ExportError(f"{path}: fields {missing} missing")
    if meta["format_version"] < 4:  # mt_vit / sparse_vit / moe_vit exports named their parameters in scheme 1
        for p in meta["params"]:
            p["path"] = param_names.upgrade_path(p["path"])
        for a in meta["arrays"]:
            name, colon, suffix = a["name"].partition(":")
            a["name"] = param_names.upgrade_path(name) + colon + suffix
    return meta


def _stored_shapes(p: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The arrays (suffix -> (shape, dtype)) an entry of model.json's `params` must have in model.bin."""
    active = tuple(p["active_shape"])
    if p["bits"] == "pvq":
        return {}  # checked by the PVQ decoder's stream lengths
    if p["bits"] == 32:
        return {"": (active, "f4")}
    scale = (active[:-2] + active[-1:], "f4")
    if p["bits"] == 8:
        return {":q": (active, "i1"), ":scale": scale}
    return {":q4": (((int(np.prod(active)) + 1) // 2,), "u1"), ":scale": scale}


def _check_params(directory: str, meta: Mapping[str, Any]) -> None:
    where = os.path.join(directory, "model.json")
    arrays = {a["name"]: a for a in meta["arrays"]}
    for p in meta["params"]:
        if p.get("bits") not in (32, 8, 4, "pvq"):
            raise ExportError(f"{where}: params[{p.get('path')!r}].bits={p.get('bits')!r}; allowed: 32, 8, 4, 'pvq'")
        if len(p["active_shape"]) != len(p["full_shape"]) or any(
                not 0 < a <= f for a, f in zip(p["active_shape"], p["full_shape"])):
            raise ExportError(f"{where}: params[{p['path']!r}].active_shape={p['active_shape']} does not fit "
                              f"full_shape={p['full_shape']}")
        for suffix, (shape, dtype) in _stored_shapes(p).items():
            stored = arrays.get(p["path"] + suffix)
            if stored is None or tuple(stored["shape"]) != shape or stored["dtype"] != dtype:
                found = "no such array" if stored is None else f"{stored['dtype']} {stored['shape']}"
                raise ExportError(f"{where}: params[{p['path']!r}] (bits={p['bits']}, active_shape={p['active_shape']}) "
                                  f"needs array {p['path'] + suffix!r} as {dtype} {list(shape)}; model.bin has {found}")


def check_plan(directory: str, meta: Mapping[str, Any], expected: Sequence[ParamPlan]) -> None:
    """Every parameter's shapes and bits in model.json are what the model and its subnet give."""
    where = os.path.join(directory, "model.json")
    written = {p["path"]: p for p in meta["params"]}
    if set(written) != {p.path for p in expected}:
        extra, missing = sorted(set(written) - {p.path for p in expected}), sorted({p.path for p in expected} - set(written))
        raise ExportError(f"{where}: params do not match the model: unexpected {extra[:3]}, missing {missing[:3]}")
    for p in expected:
        w = written[p.path]
        bits = "pvq" if p.pvq is not None else p.bits
        for field, want in (("full_shape", list(p.full_shape)), ("active_shape", list(p.active_shape)), ("bits", bits)):
            if w[field] != want:
                raise ExportError(f"{where}: params[{p.path!r}].{field}={w[field]!r}, but the model at subnet "
                                  f"{meta['subnet']} gives {want!r}")


def read_arrays(directory: str, index, sha256: str | None = None) -> dict[str, np.ndarray]:
    path = os.path.join(directory, "model.bin")
    if not os.path.isfile(path):
        raise ExportError(f"{path}: not found (model.json describes {len(index)} arrays in it)")
    with open(path, "rb") as f:
        blob = f.read()
    expected = sum(a["nbytes"] for a in index)
    if len(blob) != expected:
        raise ExportError(f"{path} has {len(blob)} bytes, model.json describes {expected}")
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise ExportError(f"{path}: sha256 differs from model.json's bin_sha256 (the file was changed or damaged)")
    return {a["name"]: np.frombuffer(blob, dtype=np.dtype(a["dtype"]).newbyteorder("<"), count=int(np.prod(a["shape"])),
                                     offset=a["offset"]).reshape(a["shape"]) for a in index}


def _load_pvq(arrays: Mapping[str, np.ndarray], key: str, spec: PVQSpec, shape: tuple[int, ...]) -> np.ndarray:
    """The dequantized active kernel from its packed PVQ arrays (inverse of `_pvq_streams`)."""
    *experts, rows, cols = shape
    count = int(np.prod(experts, dtype=np.int64))
    groups = -(-rows // spec.group_size) * cols
    streams = [np.asarray(arrays[f"{key}:{name}"]).reshape(count, -1) for name in PVQ_STREAMS]
    return _dequantize_pvq([decode_layer(spec, (rows, cols), groups, *(a.tobytes() for a in matrix))
                            for matrix in zip(*streams)], shape)


class ExportedModel:
    """A loaded export: `predict(images) -> {task: prediction}` at the exported subnet.

    `params` holds the subnet's parameters at their true widths (dequantized float32); `predict`
    runs the model's `apply` on them through `standalone.StandaloneModel`, which is also what
    `standalone_model()` returns for a `jax.export` artifact. A damaged or inconsistent export
    raises `ExportError` (one line naming the file and field)."""

    def __init__(self, directory: str):
        import jax
        import ml_collections

        from effjax.compress import standalone
        from effjax.models import build_model

        self.meta = _read_meta(directory)
        try:
            self.tasks = tuple(TaskSpec(**t) for t in self.meta["tasks"])
            self.subnet = SubnetConfig.from_dict(self.meta["subnet"])
        except (TypeError, ValueError) as e:
            raise ExportError(f"{os.path.join(directory, 'model.json')}: tasks or subnet invalid ({e})") from None
        self.model_config = ml_collections.ConfigDict(self.meta["model_config"])
        _check_params(directory, self.meta)
        model = build_model(self.model_config, self.tasks)
        input_shape = self.meta.get("signature", {}).get("input", {}).get("shape")
        self.image_shape = tuple(input_shape[1:]) if input_shape else None  # [H, W, C]; None for exports before v3
        if self.image_shape is not None:
            images = np.zeros((1,) + self.image_shape, np.float32)
            boxed = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, images))["params"]
            pvq = next((PVQSpec(**p["pvq"]) for p in self.meta["params"] if p["bits"] == "pvq"), None)
            check_plan(directory, self.meta, plan(boxed, self.model_config, self.tasks, self.subnet, pvq))
        arrays = read_arrays(directory, self.meta["arrays"], self.meta.get("bin_sha256"))
        weights, flat = [], {}
        for p in self.meta["params"]:
            key, shape, full = p["path"], tuple(p["active_shape"]), tuple(p["full_shape"])
            if p["bits"] == "pvq":
                stored = {"float": _load_pvq(arrays, key, PVQSpec(**p["pvq"]), shape).astype(np.float32)}
            else:  # the arrays `_stored_shapes` names, by role: "float", or "q" / "q4" and "scale"
                stored = {suffix[1:] or "float": arrays[key + suffix] for suffix in _stored_shapes(p)}
            if "float" in stored:
                value = stored["float"]
            else:
                codes = stored["q"] if "q" in stored else unpack_int4(stored["q4"], shape)
                value = dequantize_kernel(codes, stored["scale"])
            weights.append(standalone.Weight(key, full, shape, stored))
            flat[key] = value
        self.params = flax.traverse_util.unflatten_dict(flat, sep="/")
        subnet = self.subnet.without_bits()
        self._standalone = standalone.StandaloneModel(
            lambda params, images: model.apply({"params": params}, images, subnet=subnet), weights, self.image_shape)
        self._predict = jax.jit(self._standalone.predict)

    def standalone_model(self):
        """The `standalone.StandaloneModel` behind `predict` (for `jax.export`)."""
        return self._standalone

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import jax

        images = np.asarray(images, np.float32)
        if self.image_shape is not None and (images.ndim != 4 or images.shape[1:] != self.image_shape):
            raise ValueError(f"predict: images of shape {list(images.shape)}; this model takes "
                             f"{[None, *self.image_shape]} (model.json signature.input; batch first, any size)")
        try:
            return jax.device_get(self._predict(images))
        except flax.errors.ScopeParamShapeError as e:  # exports before format 3 carry no input shape
            raise ValueError(f"predict: images of shape {list(images.shape)} do not fit this model ({e.__class__.__name__})") from None


def load(directory: str) -> ExportedModel:
    return ExportedModel(directory)

"""Post-training PVQ of a trained effjax model: load a run, quantize its kernels, evaluate, pack.

The PVQ weight quantizer of van der Ouderaa et al. (2024), "Pyramid
Vector Quantization for LLMs" (gain-shape groups of L weights, a K-pulse pyramid shape,
a b_s-bit gain; optional random Hadamard rotation; optional Hessian-aware quantization
with H = X^T X + lambda I, their Sec. 4 / GPTQ Alg. 1), applied to every dense kernel of a
model trained with `python -m effjax.main`. The codec lives in `effjax.quant.pvq`; this
module supplies what a trained run needs around it:

1. `effjax.train.setup.load_run(workdir)`: the run's config, Setup and newest parameters;
2. `pvq_ptq_config(pvq, params, calibration)`: the `config.pvq` knobs (global L, K, b_s,
   first/last layers kept float or at their own K, per-layer regex overrides) turned into
   the mapping `effjax.quant.pvq.quantize_params` reads;
3. `collect_layer_inputs(model, params, images)`: each Dense kernel's input activations, by
   intercepting the layer calls (`nn.intercept_methods`), for the Hessian-aware path; with
   `calibration_inputs="quantized"` the layers are quantized one at a time in forward order,
   each from the inputs it sees behind the already quantized layers (GPTQ's sequential setup);
4. `run_pvq_ptq(workdir, pvq)`: float vs PVQ metrics of every task, bits per weight, and the
   packed checkpoint (`kernels.pvq` for the coded kernels, `float_params.npz` for the
   parameters left in float), which `load_pvq_params` turns back into a parameter tree.

Bits per weight of a kernel are (ceil(log2 N(L, K)) + b_s) / L, times padded/unpadded input
features when in_features is not a multiple of L (a zero-padded group costs a full group).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence

import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from effjax.quant.pvq import dequantize_matrix, load_checkpoint, quantize_params, save_checkpoint
from effjax.quant.pvq.packing import INDEX_CODINGS
from effjax.quant.pvq.ptq import PTQ_DEFAULTS, bits_report, kernel_paths, layer_settings

KERNELS_FILE = "kernels.pvq"
FLOAT_PARAMS_FILE = "float_params.npz"
REPORT_FILE = "pvq_report.json"
# layer name patterns of every effjax ViT family (parameter naming scheme 2, `effjax.models.param_names`)
FIRST_LAYERS = r"(^|/)patch_embed/kernel$"
LAST_LAYERS = r"(^|/)heads_[^/]+/out/kernel$"


def default_pvq_config() -> ml_collections.ConfigDict:
    """`config.pvq`: every knob of post-training PVQ, with its default."""
    c = ml_collections.ConfigDict()
    c.group_size = 8  # L: consecutive input features per group
    c.pulses = 12  # K: pulses (L1 norm) of each group's integer shape
    c.scale_bits = 4  # b_s: bits of each group's gain code
    c.rotate = False  # random Hadamard rotation of each kernel's input axis
    c.seed = 0  # seed of the rotations' random signs
    c.damping = 0.01  # Hessian-aware path: lambda relative to mean(diag(X^T X))
    c.hessian = False  # Hessian-aware (GPTQ-style) PVQ with calibration inputs of every layer
    c.calibration_inputs = "float"  # Hessian-aware: "float" (every layer's inputs in the float network) or
    # "quantized" (layer by layer in forward order, inputs of the network whose earlier layers are quantized)
    c.calibration_split = "train"  # split the calibration images come from
    c.calibration_examples = 256  # images whose layer inputs form X (the first n of a seeded permutation)
    c.first_layers = FIRST_LAYERS  # regex of the first layer's kernel path(s)
    c.last_layers = LAST_LAYERS  # regex of the last layers' kernel paths (one per task head)
    c.keep_first_last_float = False  # leave first and last layers in float32
    c.first_last_pulses = 0  # > 0: K of the first and last layers (0: the global K)
    c.overrides = {}  # {kernel path regex: {group_size|pulses|scale_bits|rotate|seed|damping|skip: value}}, applied last
    c.index_coding = "fixed"  # packed index coding: fixed (ceil(log2 N) bits) or mixed_radix (~log2 N bits)
    c.eval_splits = ("test",)  # splits evaluated float and quantized
    return c


def merged_pvq_config(pvq: Mapping | None) -> ml_collections.ConfigDict:
    """Defaults updated with `pvq` (a mapping or ConfigDict); unknown keys raise ValueError."""
    merged = default_pvq_config()
    given = _as_dict(pvq)
    unknown = sorted(set(given) - set(merged))
    if unknown:
        raise ValueError(f"config.pvq: unknown fields {unknown}; allowed: {sorted(merged)}")
    for key, value in given.items():
        merged[key] = value
    _check(merged)
    return merged


def _as_dict(pvq: Mapping | None) -> dict:
    return dict(pvq.to_dict() if isinstance(pvq, ml_collections.ConfigDict) else (pvq or {}))


def _check(pvq) -> None:
    for field in ("group_size", "pulses", "calibration_examples"):
        if int(pvq[field]) < 1:
            raise ValueError(f"config.pvq.{field} must be >= 1, got {pvq[field]!r}")
    if int(pvq.first_last_pulses) < 0:
        raise ValueError(f"config.pvq.first_last_pulses must be >= 0 (0: the global pulses), got {pvq.first_last_pulses!r}")
    if pvq.keep_first_last_float and pvq.first_last_pulses:
        raise ValueError("config.pvq: set keep_first_last_float or first_last_pulses, not both")
    if pvq.calibration_inputs not in ("float", "quantized"):
        raise ValueError(f"config.pvq.calibration_inputs must be 'float' or 'quantized', got {pvq.calibration_inputs!r}")
    if pvq.index_coding not in INDEX_CODINGS:
        raise ValueError(f"config.pvq.index_coding must be one of {INDEX_CODINGS}, got {pvq.index_coding!r}")
    if pvq.damping <= 0:
        raise ValueError(f"config.pvq.damping must be > 0, got {pvq.damping!r}")


def _first_last_paths(pvq, paths: Sequence[str]) -> list[str]:
    chosen = []
    for field in ("first_layers", "last_layers"):
        matched = [p for p in paths if re.search(pvq[field], p)]
        if not matched:
            raise ValueError(f"config.pvq.{field}={pvq[field]!r} matches no kernel; kernels: {list(paths)}")
        chosen += matched
    return chosen


def pvq_ptq_config(pvq, params, calibration: Mapping | None = None) -> dict:
    """The `quantize_params` config for `params` from `config.pvq` (see `default_pvq_config`)."""
    pvq = merged_pvq_config(pvq)
    overrides = {}
    if pvq.keep_first_last_float or pvq.first_last_pulses:
        special = {"skip": True} if pvq.keep_first_last_float else {"pulses": int(pvq.first_last_pulses)}
        for path in _first_last_paths(pvq, kernel_paths(params)):
            overrides[f"^{re.escape(path)}$"] = special
    for pattern, override in dict(pvq.overrides).items():
        overrides[pattern] = dict(override)
    config = {key: pvq[key] for key in PTQ_DEFAULTS}
    config["overrides"] = overrides
    if calibration:
        config["calibration"] = dict(calibration)
    return config


class LayerInputCollector:
    """Records each kernel's input activations during a jitted forward pass of `model`.

    Every module call whose module owns one of `paths` (default: all kernels) and whose input's
    last axis equals the kernel's input features is recorded: the interceptor
    (`nn.intercept_methods`) runs while jit traces the forward pass, and the recorded inputs
    are returned as outputs, so one compilation serves every call with the same batch shape.
    `order` lists the kernels in the order the forward pass first calls them.
    """

    def __init__(self, model: nn.Module, params, paths: Sequence[str] | None = None, batch_size: int = 128):
        self.model = model
        self.paths = list(kernel_paths(params) if paths is None else paths)
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
        self.in_features = {p: int(np.prod(flat[p].shape[:-1])) for p in self.paths}
        self.batch_size = batch_size
        self.order: list[str] = []
        self._forward = jax.jit(self._forward_inputs)

    def _forward_inputs(self, variables, batch):
        by_module = {p[: -len("/kernel")]: p for p in self.paths}
        captured: dict[str, list] = {p: [] for p in self.paths}

        def record(method, args, kwargs, context):
            if context.method_name == "__call__" and args:
                path = by_module.get("/".join(context.module.scope.path))
                x = args[0]
                if path is not None and hasattr(x, "shape") and x.shape[-1:] == (self.in_features[path],):
                    captured[path].append(x.reshape(-1, self.in_features[path]).astype(np.float32))
                    if path not in self.order:
                        self.order.append(path)
            return method(*args, **kwargs)

        with nn.intercept_methods(record):
            self.model.apply(variables, batch, train=False, rngs={"params": jax.random.PRNGKey(0)})
        return {p: jax.numpy.concatenate(xs) for p, xs in captured.items() if xs}

    def __call__(self, params, images: np.ndarray) -> dict[str, np.ndarray]:
        """{kernel path: inputs [rows, in_features] (float32)}; rows of several calls/batches concatenated."""
        rows: dict[str, list[np.ndarray]] = {}
        variables = {"params": params}
        for start in range(0, len(images), self.batch_size):
            batch = np.asarray(images[start : start + self.batch_size])
            for path, x in jax.device_get(self._forward(variables, batch)).items():
                rows.setdefault(path, []).append(np.asarray(x))
        return {p: np.concatenate(rows[p]) for p in self.paths if p in rows}


def collect_layer_inputs(model: nn.Module, params, images: np.ndarray, paths: Sequence[str] | None = None,
                         batch_size: int = 128) -> dict[str, np.ndarray]:
    """{kernel path: that layer's inputs [rows, in_features] (float32)} over `images` (see LayerInputCollector)."""
    return LayerInputCollector(model, params, paths, batch_size)(params, images)


def calibration_images(dataset, split: str, count: int, seed: int = 0) -> np.ndarray:
    """The first `count` images of a seeded permutation of a split."""
    if split not in dataset.splits:
        raise ValueError(f"config.pvq.calibration_split={split!r}: allowed {sorted(dataset.splits)}")
    images = dataset.splits[split]["image"]
    order = np.random.default_rng(seed).permutation(len(images))[: min(count, len(images))]
    return np.asarray(images[np.sort(order)])


@dataclasses.dataclass
class QuantizedModel:
    params: dict  # dequantized parameter tree, same structure and dtypes as the float one
    report: dict  # quantize_params' report without the QuantizedMatrix objects
    quantized: dict  # {kernel path: QuantizedMatrix}
    calibration: dict | None = None  # {kernel path: calibration inputs [rows, in_features]} (Hessian-aware path)


def quantize_model(model: nn.Module, params, dataset, pvq) -> QuantizedModel:
    """PVQ-quantize a model's kernels per `config.pvq`, with calibration inputs if `pvq.hessian`."""
    pvq = merged_pvq_config(pvq)
    calibration = None
    if pvq.hessian:
        images = calibration_images(dataset, pvq.calibration_split, int(pvq.calibration_examples), int(pvq.seed))
        if pvq.calibration_inputs == "quantized":
            return _quantize_layer_by_layer(model, params, images, pvq)
        calibration = collect_layer_inputs(model, params, images)
    dequantized, report = quantize_params(params, pvq_ptq_config(pvq, params, calibration))
    quantized = report.pop("quantized")
    return QuantizedModel(dequantized, report, quantized, calibration)


def _quantize_layer_by_layer(model: nn.Module, params, images: np.ndarray, pvq) -> QuantizedModel:
    """Hessian-aware PVQ in forward order, each layer's H from the inputs it receives once every
    earlier layer is quantized (GPTQ's sequential calibration); kernels the forward pass never
    calls are quantized last, without calibration."""
    collector = LayerInputCollector(model, params)
    inputs = collector(params, images)
    base = pvq_ptq_config(pvq, params)
    current, quantized, layers, calibration = params, {}, {}, {}
    order = list(collector.order) + [p for p in collector.paths if p not in collector.order]
    for number, path in enumerate(order):
        if layer_settings(path, base)["skip"]:
            continue
        if number > 0 and path in collector.order:
            inputs = collector(current, images)
        config = dict(base)
        config["overrides"] = {**base["overrides"], f"^(?!{re.escape(path)}$)": {"skip": True}}
        if path in inputs:
            config["calibration"] = {path: inputs[path]}
            calibration[path] = inputs[path]
        current, report = quantize_params(current, config)
        quantized[path], layers[path] = report["quantized"][path], report["layers"][path]
    return QuantizedModel(current, bits_report(quantized, layers), quantized, calibration)


def save_pvq_model(directory: str, params, quantized: Mapping, index_coding: str = "fixed") -> dict:
    """Write `kernels.pvq` (coded kernels) and `float_params.npz` (all other leaves); returns sizes."""
    os.makedirs(directory, exist_ok=True)
    kernels = save_checkpoint(os.path.join(directory, KERNELS_FILE), dict(quantized), index_coding)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    rest = {path: np.asarray(leaf) for path, leaf in flat.items() if path not in quantized}
    np.savez(os.path.join(directory, FLOAT_PARAMS_FILE), **rest)
    float_bytes = sum(a.nbytes for a in rest.values())
    total_params = sum(int(np.size(leaf)) for leaf in flat.values())
    return {
        "kernels": kernels,
        "float_params": int(sum(a.size for a in rest.values())),
        "float_param_bytes": int(float_bytes),
        "npz_file_bytes": os.path.getsize(os.path.join(directory, FLOAT_PARAMS_FILE)),
        "total_params": total_params,
        "float32_model_bytes": int(sum(np.asarray(leaf).nbytes for leaf in flat.values())),
        "pvq_model_bytes": int(kernels["file_bytes"] + float_bytes),
        "model_bits_per_param": 8.0 * (kernels["file_bytes"] + float_bytes) / total_params,
    }


def load_pvq_params(directory: str) -> dict:
    """The parameter tree a `save_pvq_model` directory stands for (kernels decoded bit for bit, as 2-D
    [in, out] matrices; `reshape_like` restores N-D kernel shapes)."""
    with np.load(os.path.join(directory, FLOAT_PARAMS_FILE)) as rest:
        flat = {path: rest[path] for path in rest.files}
    for path, coded in load_checkpoint(os.path.join(directory, KERNELS_FILE)).items():
        flat[path] = dequantize_matrix(coded)
    return flax.traverse_util.unflatten_dict(flat, sep="/")


def reshape_like(params, reference):
    """`params` with every leaf reshaped to the matching leaf of `reference` (2-D kernels -> N-D)."""
    return jax.tree.map(lambda a, r: np.asarray(a, np.asarray(r).dtype).reshape(np.shape(r)), params, reference)


def retained_fraction(task, float_value: float, pvq_value: float) -> float:
    """pvq / float for metrics where higher is better; float / pvq for errors (depth RMSE)."""
    if task.higher_is_better:
        return float(pvq_value / float_value) if float_value else float("nan")
    return float(float_value / pvq_value) if pvq_value else float("nan")


def run_pvq_ptq(workdir: str, pvq=None, output_dir: str | None = None, devices=None) -> dict:
    """Float vs PVQ metrics of every task of a trained run, bits per weight and packed sizes.

    `pvq` defaults to the run's `config.pvq` (if any) over `default_pvq_config()`; the packed
    checkpoint goes to `output_dir` (default `<workdir>/pvq`), and its reload is evaluated.
    """
    from effjax.train import step as step_lib
    from effjax.train.setup import load_run
    from effjax.train.trainer import evaluate

    run = load_run(workdir, devices=devices)
    run.params = jax.tree.map(np.asarray, run.params)
    base = run.config.pvq.to_dict() if "pvq" in run.config else {}
    pvq = merged_pvq_config({**base, **_as_dict(pvq)})
    setup = run.setup
    eval_step = jax.jit(step_lib.make_eval_step(setup.model, setup.dataset.tasks),
                        in_shardings=(setup.state_shardings.params, setup.batch_sharding))
    quantized = quantize_model(setup.model, run.params, setup.dataset, pvq)
    output_dir = output_dir or os.path.join(workdir, "pvq")
    sizes = save_pvq_model(output_dir, quantized.params, quantized.quantized, pvq.index_coding)
    reloaded = reshape_like(load_pvq_params(output_dir), run.params)
    tasks = {t.name: t for t in setup.dataset.tasks}
    metrics = {}
    for split in pvq.eval_splits:
        float_metrics = evaluate(setup, run.params, split, eval_step)
        pvq_metrics = evaluate(setup, reloaded, split, eval_step)
        metrics[split] = {
            name: {"metric": tasks[name].metric, "float": float_metrics[name], "pvq": pvq_metrics[name],
                   "retained": retained_fraction(tasks[name], float_metrics[name], pvq_metrics[name])}
            for name in float_metrics
        }
    result = {
        "workdir": os.path.abspath(workdir),
        "step": run.step,
        "pvq": pvq.to_dict(),
        "metrics": metrics,
        "kernel_bits_per_weight": float(quantized.report["bits_per_weight"]),
        "quantized_weights": quantized.report["weights"],
        "sizes": sizes,
        "layers": quantized.report["layers"],
        "output_dir": os.path.abspath(output_dir),
    }
    with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
        json.dump(_jsonable(result), f, indent=2)
    return result


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value

"""Post-training PVQ of every dense kernel in a Flax parameter tree, driven by a config.

Van der Ouderaa et al.'s (2024) PVQ applied layer by layer: every leaf named
`kernel` with ndim >= 2 is quantized. A kernel of shape [..., out_features] is viewed as
the 2-D matrix [prod(shape[:-1]), out_features]: all but the last axis are input features
(right for Dense and Conv kernels, whose last axis is the output; a DenseGeneral with
several output axes is treated as if only its last axis were the output).

Config (a mapping; `PTQ_DEFAULTS` lists the global keys):
    group_size, pulses, scale_bits, rotate, seed: the global PVQSpec fields;
    damping: GPTQ's lambda relative to mean(diag(X^T X));
    overrides: {path_regex: {field: value, ..., "skip": bool}}, applied in order to the
        kernels whose path ("params/Dense_0/kernel") matches re.search(path_regex);
    calibration: {layer_path: activations [..., in_features]} with layer_path the kernel's
        path with or without "/kernel"; those layers use Hessian-aware PVQ (`gptq.py`).
Each layer's rotation seed is `seed` mixed with a CRC of its path, so layers rotate differently.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

import flax
import numpy as np

from effjax.quant.pvq.gptq import gptq_quantize_matrix, input_hessian
from effjax.quant.pvq.weights import PVQSpec, QuantizedMatrix, dequantize_matrix, quantize_matrix, sqnr_db

PTQ_DEFAULTS = {"group_size": 8, "pulses": 12, "scale_bits": 4, "rotate": False, "seed": 0, "damping": 0.01}
SPEC_FIELDS = ("group_size", "pulses", "scale_bits", "rotate", "seed")


def kernel_paths(params) -> list[str]:
    """Paths of the leaves that `quantize_params` quantizes, in tree order."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    return ["/".join(map(str, keys)) for keys, leaf in flat.items() if keys[-1] == "kernel" and np.ndim(leaf) >= 2]


def layer_settings(path: str, config: Mapping) -> dict:
    """The global config with every matching override applied, for one kernel path."""
    unknown = set(config) - set(PTQ_DEFAULTS) - {"overrides", "calibration"}
    if unknown:
        raise ValueError(f"unknown PTQ config keys: {sorted(unknown)}")
    settings = {**PTQ_DEFAULTS, **{k: v for k, v in config.items() if k in PTQ_DEFAULTS}, "skip": False}
    for pattern, override in (config.get("overrides") or {}).items():
        bad = set(override) - set(settings)
        if bad:
            raise ValueError(f"override {pattern!r} has unknown keys: {sorted(bad)}")
        if re.search(pattern, path):
            settings.update(override)
    return settings


def _calibration_for(path: str, calibration: Mapping):
    layer = path[: -len("/kernel")] if path.endswith("/kernel") else path
    return calibration.get(path, calibration.get(layer))


def quantize_tree(params, config: Mapping) -> tuple[dict[str, QuantizedMatrix], dict]:
    """PVQ-code every kernel; returns ({path: QuantizedMatrix}, per-layer report)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    calibration = dict(config.get("calibration") or {})
    paths = kernel_paths(params)
    stray = [k for k in calibration if k not in paths and f"{k}/kernel" not in paths]
    if stray:
        raise ValueError(f"calibration keys match no kernel: {stray}")
    quantized, layers = {}, {}
    for keys, leaf in flat.items():
        path = "/".join(map(str, keys))
        if path not in paths:
            continue
        settings = layer_settings(path, config)
        if settings["skip"]:
            continue
        seed = int(settings["seed"]) ^ zlib.crc32(path.encode())
        spec = PVQSpec(*(settings[f] for f in SPEC_FIELDS[:-1]), seed=seed)
        matrix = np.asarray(leaf, np.float64).reshape(-1, leaf.shape[-1])
        activations = _calibration_for(path, calibration)
        if activations is None:
            coded = quantize_matrix(matrix, spec)
        else:
            hessian = input_hessian(activations, matrix.shape[0])
            coded = gptq_quantize_matrix(matrix, hessian, spec, settings["damping"])
        dequantized = dequantize_matrix(coded)
        entry = {
            "shape": list(np.shape(leaf)),
            **{f: getattr(spec, f) for f in SPEC_FIELDS[:-1]},
            "hessian_aware": activations is not None,
            "bits_per_weight": coded.bits_per_weight,
            "sqnr_db": sqnr_db(matrix, dequantized),
        }
        if activations is not None:
            x = np.asarray(activations, np.float64).reshape(-1, matrix.shape[0])
            entry["output_sqnr_db"] = sqnr_db(x @ matrix, x @ dequantized)
        quantized[path], layers[path] = coded, entry
    return quantized, bits_report(quantized, layers)


def bits_report(quantized: Mapping[str, QuantizedMatrix], layers: dict) -> dict:
    """{"layers", "bits_per_weight": the weight-count average over the quantized kernels, "weights": their count}."""
    weights = sum(int(np.prod(q.shape)) for q in quantized.values())
    bits = sum(q.bits_per_weight * np.prod(q.shape) for q in quantized.values())
    return {"layers": layers, "bits_per_weight": float(bits / weights) if weights else 0.0, "weights": weights}


def dequantize_into(params, quantized: Mapping[str, QuantizedMatrix]):
    """A copy of params with each coded kernel replaced by its dequantized value (same dtype, shape)."""
    frozen = isinstance(params, flax.core.FrozenDict)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    by_path = {"/".join(map(str, keys)): keys for keys in flat}
    for path, coded in quantized.items():
        if path not in by_path:
            raise ValueError(f"quantized layer {path!r} is not in params")
        leaf = flat[by_path[path]]
        flat[by_path[path]] = np.asarray(dequantize_matrix(coded).reshape(np.shape(leaf)), dtype=np.asarray(leaf).dtype)
    tree = flax.traverse_util.unflatten_dict(flat)
    return flax.core.freeze(tree) if frozen else tree


def quantize_params(params, config: Mapping):
    """PVQ post-training quantization: (dequantized params, report).

    The report has per-layer shape, PVQ settings, bits_per_weight and weight SQNR (dB), plus
    output SQNR on the calibration activations for Hessian-aware layers; `report["bits_per_weight"]`
    is the weight-count average over quantized kernels, and `report["quantized"]` holds the
    QuantizedMatrix per path for `packing.save_checkpoint`.
    """
    quantized, report = quantize_tree(params, config)
    report["quantized"] = quantized
    return dequantize_into(params, quantized), report

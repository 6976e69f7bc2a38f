"""Per-expert bit allocation under an average-bits budget (MC#, "Mixture Compressor for MoE", Sec. 3.2).

For each MoE layer, choose bits b_e from `bit_options` for every expert e to

    minimize   sum_e f_e^alpha * w_e^beta * L_e(b_e)
    subject to sum_e b_e <= average_bits * E

with f_e the expert's usage frequency and w_e its mean gate weight on the calibration
set (routing statistics from `expert_merging.accumulate_routing_stats`) and L_e(b) the
relative quantization error of the expert's weights at b bits (symmetric per-output-
channel round-to-nearest, as AQT quantizes weights). All experts of a layer have the
same size, so the budget is a bound on the sum of bits. MC# solves this integer
program with a solver; it is a multiple-choice knapsack over at most E * max(bits)
units of budget, which the dynamic program below solves exactly (checked against
brute force in the tests). The result is a per-expert bit list per layer that the
quantization issue applies.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np

from effjax.quant import rtn

DEFAULT_BIT_OPTIONS = (2, 4, 8)


def quantize_rtn(w: np.ndarray, bits: int, channel_axis: int = -1) -> np.ndarray:
    """Round-to-nearest (`effjax.quant.rtn`) in float64 with one scale per output channel (max |w| over the other axes)."""
    w = np.asarray(w, np.float64)
    return rtn.fake_quantize(w, bits, axis=tuple(a for a in range(w.ndim) if a != channel_axis % w.ndim))


def expert_quantization_error(layer: Mapping, expert: int, bits: int) -> float:
    """||W - Q_b(W)||^2 / ||W||^2 summed over the expert's two kernels."""
    err = norm = 0.0
    for key in ("wi", "wo"):
        w = np.asarray(layer[key][expert], np.float64)
        err += float(np.sum((w - quantize_rtn(w, bits)) ** 2))
        norm += float(np.sum(w**2))
    return err / max(norm, 1e-30)


def expert_importance(frequency: np.ndarray, mean_gate: np.ndarray, alpha: float = 1.0, beta: float = 1.0) -> np.ndarray:
    return np.power(np.asarray(frequency, np.float64), alpha) * np.power(np.asarray(mean_gate, np.float64), beta)


def allocate_bits(importance: np.ndarray, errors: np.ndarray, bit_options: Sequence[int], average_bits: float) -> tuple[int, ...]:
    """Exact minimizer of sum_e importance_e * errors[e, option] with mean bits <= average_bits.

    errors: [E, len(bit_options)]. Dynamic program over (expert, bits used so far);
    ties go to fewer bits.
    """
    importance, errors = np.asarray(importance, np.float64), np.asarray(errors, np.float64)
    num_experts = len(importance)
    if not bit_options or any(int(b) != b or b < 1 for b in bit_options):
        raise ValueError(f"bit_options={bit_options}: must be positive integers")
    if not min(bit_options) <= average_bits:
        raise ValueError(f"average_bits={average_bits}: must be >= the smallest option {min(bit_options)}")
    if num_experts < 1:
        raise ValueError(f"errors: need at least one expert, got {num_experts}")
    budget = int(np.floor(average_bits * num_experts + 1e-9))
    options = sorted(range(len(bit_options)), key=lambda i: bit_options[i])
    inf = float("inf")
    best = np.full(budget + 1, inf)
    best[0] = 0.0
    choice = np.zeros((num_experts, budget + 1), np.int64)
    for e in range(num_experts):
        nxt = np.full(budget + 1, inf)
        for used in range(budget + 1):
            if best[used] == inf:
                continue
            for i in options:
                total = used + bit_options[i]
                if total <= budget:
                    value = best[used] + importance[e] * errors[e, i]
                    if value < nxt[total] - 1e-15:
                        nxt[total], choice[e, total] = value, i
        best = nxt
    used = int(np.argmin(best))  # lowest cost; argmin picks the fewest bits among exact ties
    bits = []
    for e in range(num_experts - 1, -1, -1):
        i = choice[e, used]
        bits.append(int(bit_options[i]))
        used -= bit_options[i]
    return tuple(reversed(bits))


def allocate_model_bits(moe_layers: Mapping[str, Mapping], stats: Mapping, average_bits: float,
                        bit_options: Sequence[int] = DEFAULT_BIT_OPTIONS, alpha: float = 1.0,
                        beta: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Layer path -> bits per expert, for every MoE layer (`expert_merging.find_moe_layers(params)`)."""
    result = {}
    for path, layer in moe_layers.items():
        if path not in stats:
            raise ValueError(f"stats: no routing statistics for MoE layer {path!r}; collected: {list(stats)}")
        s = stats[path]
        num_experts = np.asarray(layer["wi"]).shape[0]
        if s.expert_tokens.shape[-1] != num_experts:
            raise ValueError(f"stats[{path!r}]: {s.expert_tokens.shape[-1]} experts in the statistics, {num_experts} in the layer")
        errors = np.array([[expert_quantization_error(layer, e, b) for b in bit_options] for e in range(num_experts)])
        result[path] = allocate_bits(expert_importance(s.frequency(), s.mean_gate(), alpha, beta), errors, bit_options,
                                     average_bits)
    return result


def save_bits(path: str, bits: Mapping[str, Sequence[int]], average_bits: float, bit_options: Sequence[int]) -> None:
    """JSON the quantization issue reads: {"average_bits", "bit_options", "layers": {path: [bits per expert]}}."""
    with open(path, "w") as f:
        json.dump({"average_bits": average_bits, "bit_options": list(bit_options),
                   "layers": {k: list(v) for k, v in bits.items()}}, f, indent=1)


def fake_quantize_experts(moe_layers: Mapping[str, Mapping], bits: Mapping[str, Sequence[int]]) -> dict[str, dict]:
    """Layer path -> layer dict with each expert's kernels round-to-nearest quantized at its bits."""
    out = {}
    for path, layer in moe_layers.items():
        new = dict(layer)
        for key in ("wi", "wo"):
            w = np.asarray(layer[key])
            new[key] = np.stack([quantize_rtn(w[e], b) for e, b in enumerate(bits[path])]).astype(w.dtype)
        out[path] = new
    return out

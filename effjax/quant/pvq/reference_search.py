"""Nearest-codeword search on the pyramid P(L, K): a per-vector NumPy reference.

The codeword nearest in angle to x maximizes (x.y)^2 / (y.y) over y in Z^L with
||y||_1 = K (Fischer 1986, Sec. III; the shape quantizer of van der Ouderaa et al. 2024,
"Pyramid Vector Quantization for LLMs", Sec. 3). With a = |x| and y >= 0 (signs follow x;
a zero coordinate gets +), maximize F(y) = a.y / ||y||_2. Steps:

1. projection: y = floor((K - 1/2) a / ||a||_1), which never overshoots K pulses and
   leaves at most L pulses to place;
2. greedy pulse placement (as in the Opus codec): each remaining pulse goes to the
   coordinate that maximizes (a.y + a_i)^2 / (y.y + 2 y_i + 1). Near-optimal only
   (gaps of a few percent in the objective on small L, K; see experiments/pvq);
3. exact refinement along a parametric path. If y* is optimal and c* = F(y*) / (2 ||y*||),
   then for every y, a.y <= F* ||y|| <= F* (||y||^2 + ||y*||^2) / (2 ||y*||), i.e. y*
   maximizes the separable concave g_c(y) = a.y - c y.y (sum y = K) at c = c*. For fixed c
   that maximizer y(c) is the K largest marginal gains a_i - c (2m - 1), m = 1..K
   (`allocation_at`); as c grows it changes one pulse at a time, moving a pulse i -> j at
   c = (a_i - a_j) / (2 (y_i - y_j - 1)) (`next_event`). We walk y(c) over an interval
   that must hold c*, keeping the best F (`curvature_interval`): with y = (K/L) 1 + z,
   Cauchy-Schwarz gives F(y) <= (K mean(a) + ||a - mean(a)|| t) / sqrt(K^2/L + t^2),
   t = ||z||, so F(y*) >= F_greedy confines t* (a quadratic inequality), hence
   ||y*|| = sqrt(K^2/L + t*^2) and c* = F*/(2||y*||) with F_greedy <= F* <= ||a||_2.
   For inputs without ties this visits y* (exact); measured exact on every brute-force
   case, ties included (tests/pvq/test_search.py, experiments/pvq/README.md).
A zero vector maps to K pulses on coordinate 0.

This file is the straightforward per-vector loop used as the semantic reference and the
benchmark baseline; `jax_codec.search_batch` runs the same steps vectorized.
`brute_force_search` enumerates P(L, K) for tests.
"""

from __future__ import annotations

import numpy as np

from effjax.quant.pvq.counting import check_dims, num_codewords
from effjax.quant.pvq.enumeration import decode_batch

RELATIVE_IMPROVEMENT = 1e-12  # a path point must beat the best so far by this much to replace it


def max_path_steps(L: int, K: int) -> int:
    """Cap on pulse moves along the refinement path (a safety bound; the walks measured on
    Gaussian groups take far fewer steps, see experiments/pvq/README.md)."""
    return 4 * K + 2 * L


def correlation_objective(x, y) -> np.ndarray:
    """(x.y)^2 / (y.y) along the last axis (0 where y = 0)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    yy = (y * y).sum(-1)
    return np.where(yy > 0, (x * y).sum(-1) ** 2 / np.where(yy > 0, yy, 1.0), 0.0)


def check_search_input(x, K) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must have a last axis of length L >= 1, got shape {x.shape}")
    check_dims(x.shape[-1], K)
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinite values")
    return x


def curvature_interval(magnitudes, best_value, K: int, xp=np):
    """[c_lo, c_hi] holding c* = F*/(2||y*||) (last axis of magnitudes is L; xp is numpy or jax.numpy).

    best_value is the greedy objective F_greedy^2. With A = K mean(a), s = ||a - mean(a)||,
    Q = K^2/L, any y with F(y) >= F_greedy has t = ||y - (K/L) 1|| in the roots interval of
    (s^2 - F^2) t^2 + 2 A s t + A^2 - F^2 Q >= 0; then ||y||^2 = Q + t^2 and
    c* <= max_t (A + s t) / (2 (Q + t^2)), c* >= F_greedy / (2 min(K, ||y||_max)).
    Both ends are widened by a relative 1e-9 against rounding.
    """
    L = magnitudes.shape[-1]
    mean = magnitudes.mean(-1)
    A = K * mean
    s = xp.sqrt(((magnitudes - mean[..., None]) ** 2).sum(-1))
    Q = K * K / L
    F = xp.sqrt(best_value) * (1 - 1e-12)
    curvature = s * s - F * F  # coefficient of t^2
    half_linear = A * s
    constant = A * A - F * F * Q
    discriminant = xp.maximum(half_linear * half_linear - curvature * constant, 0.0)
    bounded = curvature < 0
    safe = xp.where(bounded, curvature, -1.0)
    t_low = xp.maximum((-half_linear + xp.sqrt(discriminant)) / safe, 0.0)
    t_high = (-half_linear - xp.sqrt(discriminant)) / safe
    t_low = xp.where(bounded, t_low, 0.0)
    norm_high = xp.where(bounded, xp.minimum(xp.sqrt(Q + t_high * t_high), K), K)
    s_safe = xp.where(s > 0, s, 1.0)
    t_peak = xp.where(s > 0, (-A + xp.sqrt(A * A + s * s * Q)) / s_safe, 0.0)
    t_peak = xp.where(bounded, xp.clip(t_peak, t_low, t_high), xp.maximum(t_peak, t_low))
    upper = (A + s * t_peak) / (2 * (Q + t_peak * t_peak))
    upper = xp.minimum(upper, xp.sqrt((magnitudes * magnitudes).sum(-1) * L) / (2 * K))
    lower = xp.sqrt(best_value) / (2 * norm_high)
    return lower * (1 - 1e-9), upper * (1 + 1e-9)


def allocation_at(magnitudes: np.ndarray, K: int, curvature: float) -> np.ndarray:
    """argmax of a.y - curvature * y.y over y >= 0 integer with sum(y) = K: the K largest
    marginal gains a_i - curvature * (2m - 1), m = 1..K, counted per coordinate."""
    L = magnitudes.size
    marginals = magnitudes[:, None] - curvature * (2 * np.arange(1, K + 1) - 1)[None, :]
    chosen = np.argsort(-marginals.reshape(-1), kind="stable")[:K]
    return np.bincount(chosen // K, minlength=L).astype(np.int64)


def next_event(magnitudes: np.ndarray, y: np.ndarray, curvature: float):
    """Smallest curvature >= the current one at which a pulse moves i -> j on the path."""
    excess = y[:, None] - y[None, :] - 1  # [i, j]: pulse leaves i, joins j
    valid = (excess > 0) & (y[:, None] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = (magnitudes[:, None] - magnitudes[None, :]) / (2.0 * excess)
    crossing = np.where(valid & (crossing >= curvature), crossing, np.inf)
    flat = int(np.argmin(crossing))
    return crossing.reshape(-1)[flat], flat // y.size, flat % y.size


def search_one(x: np.ndarray, K: int, refine: bool = True) -> np.ndarray:
    """Codeword of P(len(x), K) nearest in angle to the 1-D vector x (int64)."""
    magnitudes = np.abs(x)
    L = magnitudes.size
    y = np.zeros(L, dtype=np.int64)
    total = magnitudes.sum()
    if K == 0:
        return y
    if total == 0:
        y[0] = K
        return y
    y = np.floor((K - 0.5) * magnitudes / total).astype(np.int64)
    xy, yy = float(magnitudes @ y), float(y @ y)
    for _ in range(K - int(y.sum())):
        gains = (xy + magnitudes) ** 2 / (yy + 2 * y + 1)
        i = int(np.argmax(gains))
        xy, yy = xy + magnitudes[i], yy + 2 * y[i] + 1
        y[i] += 1
    if refine:
        best, best_value = y, xy * xy / yy
        curvature, last_curvature = curvature_interval(magnitudes, best_value, K)
        y = allocation_at(magnitudes, K, curvature)
        for _ in range(max_path_steps(L, K)):
            value = float(magnitudes @ y) ** 2 / float(y @ y)
            if value > best_value * (1 + RELATIVE_IMPROVEMENT):
                best, best_value = y.copy(), value
            curvature, i, j = next_event(magnitudes, y, curvature)
            if curvature > last_curvature:
                break
            y[i] -= 1
            y[j] += 1
        y = best
    return np.where(x < 0, -y, y)


def search_reference(x, K: int, refine: bool = True) -> np.ndarray:
    """`search_one` over a batch [..., L] in a Python loop (the baseline the JAX codec is timed against)."""
    x = check_search_input(x, K)
    flat = x.reshape(-1, x.shape[-1])
    out = np.stack([search_one(v, K, refine) for v in flat]) if flat.shape[0] else np.zeros(flat.shape, np.int64)
    return out.reshape(x.shape)


def all_codewords(L: int, K: int) -> np.ndarray:
    """Every codeword of P(L, K) in index order, [N(L, K), L] (for small pyramids only)."""
    total = num_codewords(L, K)
    if total > 2_000_000:
        raise ValueError(f"N({L}, {K}) = {total} is too large to enumerate")
    return decode_batch(np.arange(total, dtype=np.uint64), L, K)


def brute_force_search(x, K: int) -> np.ndarray:
    """Exact maximizer of (x.y)^2/(y.y) by enumerating P(L, K); x is [..., L]."""
    x = check_search_input(x, K)
    codebook = all_codewords(x.shape[-1], K).astype(np.float64)
    norms = np.sqrt((codebook * codebook).sum(-1))
    flat = x.reshape(-1, x.shape[-1])
    scores = np.abs(flat @ (codebook / norms[:, None]).T)
    best = codebook[np.argmax(scores, axis=1)].astype(np.int64)
    return best.reshape(x.shape)

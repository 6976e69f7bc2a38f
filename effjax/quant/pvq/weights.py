"""PVQ weight quantizer: groups, gain-shape split, scale quantizer, random Hadamard rotation.

van der Ouderaa et al. (2024), "Pyramid Vector Quantization for LLMs", Sec. 3-4:

- groups: a kernel [in_features, out_features] is split into groups of L = `group_size`
  consecutive *input* features for each output feature (the same grouping GPTQ needs,
  see `gptq.py`); in_features is zero-padded up to a multiple of L;
- gain-shape: each group w is reconstructed as g * y / ||y||_2 with y in P(L, K) the
  codeword nearest in angle (`jax_codec.search_batch`) and g the quantized gain;
- scale quantizer: for a fixed shape u = y/||y||, ||w - g u||^2 = (g - w.u)^2 + ||w||^2 - (w.u)^2,
  so the gain error adds exactly to the shape error and the best b_s-bit fixed-rate gain
  quantizer is the MSE-optimal scalar quantizer of the optimal gains g* = w.u. We fit it
  per layer with Lloyd's algorithm (2^b_s levels, initialized at quantiles, run on the
  layer's empirical gains). Lloyd's conditions are necessary for optimality, and for a
  log-concave gain density (e.g. the chi distribution of the gains of Gaussian groups)
  their solution is unique (Fleischer 1964), hence optimal. Assumption: gain codes are
  stored at a fixed b_s bits (no entropy coding), one codebook per layer;
- rotation ("coherence processing"): W <- H D W along the input axis, with D random
  signs from `seed` and H the normalized Walsh-Hadamard matrix in blocks of the largest
  power of two dividing in_features (at most `MAX_HADAMARD_BLOCK`); dequantization undoes it.

Bits per weight = (ceil(log2 N(L, K)) + b_s) / L per group, plus the per-layer codebook
(2^b_s float32 levels) which `QuantizedMatrix.storage_bits` counts separately.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from effjax.quant import rtn

from effjax.quant.pvq.counting import check_dims, index_bits, num_codewords
from effjax.quant.pvq.jax_codec import search_batch

MAX_HADAMARD_BLOCK = 4096
LLOYD_ITERATIONS = 100


@dataclasses.dataclass(frozen=True)
class PVQSpec:
    """How one kernel is quantized."""

    group_size: int = 8  # L: consecutive input features per group
    pulses: int = 12  # K: L1 norm of the integer shape codeword
    scale_bits: int = 4  # b_s: bits of each group's gain code
    rotate: bool = False  # random Hadamard rotation of the input axis before quantizing
    seed: int = 0  # seed of the rotation's random signs

    def __post_init__(self):
        check_dims(self.group_size, self.pulses)
        if int(self.scale_bits) != self.scale_bits or not 0 <= self.scale_bits <= 16:
            raise ValueError(f"scale_bits must be an integer in [0, 16], got {self.scale_bits!r}")

    @property
    def index_bits(self) -> int:
        return index_bits(self.group_size, self.pulses)

    @property
    def bits_per_weight(self) -> float:
        """(ceil(log2 N(L, K)) + b_s) / L."""
        return (self.index_bits + self.scale_bits) / self.group_size

    @property
    def num_codewords(self) -> int:
        return num_codewords(self.group_size, self.pulses)


@dataclasses.dataclass
class QuantizedMatrix:
    """A PVQ-coded kernel [in_features, out_features]; groups ordered (input group, output)."""

    spec: PVQSpec
    shape: tuple[int, int]  # the unpadded 2-D shape
    codewords: np.ndarray  # [groups, L] int64, kept for reuse; indices are what is stored
    scale_codes: np.ndarray  # [groups] uint16 codes into scale_codebook
    scale_codebook: np.ndarray  # [2^b_s] float32 gain levels, ascending

    @property
    def num_groups(self) -> int:
        return self.codewords.shape[0]

    @property
    def payload_bits(self) -> int:
        """Bits of the packed indices and scale codes (each stream padded to whole bytes)."""
        spec = self.spec
        return 8 * (_bytes(self.num_groups * spec.index_bits) + _bytes(self.num_groups * spec.scale_bits))

    @property
    def storage_bits(self) -> int:
        """payload_bits plus the float32 scale codebook."""
        return self.payload_bits + 32 * self.scale_codebook.size

    @property
    def bits_per_weight(self) -> float:
        """Index and scale bits per (unpadded) weight: (ceil(log2 N) + b_s) / L without padding."""
        return self.num_groups * (self.spec.index_bits + self.spec.scale_bits) / (self.shape[0] * self.shape[1])


def _bytes(bits: int) -> int:
    return (bits + 7) // 8


def hadamard_block_size(n: int) -> int:
    """Largest power of two dividing n, capped at MAX_HADAMARD_BLOCK."""
    return min(n & -n, MAX_HADAMARD_BLOCK)


def _walsh_hadamard(matrix: np.ndarray) -> np.ndarray:
    """blockdiag(H) @ matrix for [n, cols]: the normalized Walsh-Hadamard transform of each block of
    `hadamard_block_size(n)` rows."""
    n = matrix.shape[0]
    block = hadamard_block_size(n)
    out = matrix.reshape(n // block, block, -1).copy()
    h = 1
    while h < block:
        view = out.reshape(n // block, block // (2 * h), 2, h, out.shape[-1])
        a, b = view[:, :, 0].copy(), view[:, :, 1].copy()
        view[:, :, 0], view[:, :, 1] = a + b, a - b
        h *= 2
    return (out / math.sqrt(block)).reshape(matrix.shape)


def rotation_signs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=n)


def rotate_rows(matrix: np.ndarray, seed: int) -> np.ndarray:
    """R @ matrix with R = blockdiag(H) D (orthogonal), acting on axis 0 of [n, cols]."""
    matrix = np.asarray(matrix, np.float64)
    return _walsh_hadamard(matrix * rotation_signs(matrix.shape[0], seed)[:, None])


def unrotate_rows(matrix: np.ndarray, seed: int) -> np.ndarray:
    """R^T @ matrix (the normalized Hadamard matrix is its own inverse)."""
    matrix = np.asarray(matrix, np.float64)
    return _walsh_hadamard(matrix) * rotation_signs(matrix.shape[0], seed)[:, None]


def fit_scale_codebook(gains: np.ndarray, scale_bits: int) -> np.ndarray:
    """Lloyd-Max levels (float32, ascending) for the gains, 2^scale_bits of them."""
    gains = np.sort(np.asarray(gains, np.float64).reshape(-1))
    levels_count = 2**scale_bits
    if gains.size == 0:
        return np.zeros(levels_count, np.float32)
    levels = np.quantile(gains, (np.arange(levels_count) + 0.5) / levels_count)
    for _ in range(LLOYD_ITERATIONS):
        edges = (levels[1:] + levels[:-1]) / 2
        cell = np.searchsorted(edges, gains)
        sums = np.bincount(cell, weights=gains, minlength=levels_count)
        counts = np.bincount(cell, minlength=levels_count)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), levels)
        if np.allclose(updated, levels, rtol=0, atol=1e-12 * max(gains[-1], 1e-30)):
            break
        levels = np.sort(updated)
    return levels.astype(np.float32)


def quantize_gains(gains: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook level for each gain (uint16)."""
    levels = codebook.astype(np.float64)
    edges = (levels[1:] + levels[:-1]) / 2
    return np.searchsorted(edges, np.asarray(gains, np.float64)).astype(np.uint16)


def unit_shapes(codewords: np.ndarray) -> np.ndarray:
    """y / ||y||_2 in float64 (codewords have K >= 1 pulses, so ||y|| > 0; K = 0 gives 0)."""
    y = codewords.astype(np.float64)
    norms = np.sqrt((y * y).sum(-1, keepdims=True))
    return y / np.where(norms > 0, norms, 1.0)


def padded_rows(in_features: int, group_size: int) -> int:
    return -(-in_features // group_size) * group_size


def to_groups(matrix: np.ndarray, group_size: int) -> np.ndarray:
    """[in, out] -> [(in/L) * out, L]: group (g, j) = matrix[g L:(g+1) L, j], zero-padded."""
    padded = pad_rows(np.asarray(matrix, np.float64), group_size)
    return padded.reshape(-1, group_size, padded.shape[1]).transpose(0, 2, 1).reshape(-1, group_size)


def from_groups(groups: np.ndarray, shape: tuple[int, int], group_size: int) -> np.ndarray:
    """Inverse of `to_groups` (drops the padding rows)."""
    rows, cols = shape
    padded = groups.reshape(-1, cols, group_size).transpose(0, 2, 1).reshape(-1, cols)
    return padded[:rows]


def quantize_groups(groups: np.ndarray, spec: PVQSpec, codebook: np.ndarray | None = None):
    """PVQ shapes, optimal gains, fitted (or given) codebook and gain codes of [groups, L] vectors."""
    codewords = search_batch(groups, spec.pulses)
    gains = (groups * unit_shapes(codewords)).sum(-1)
    if codebook is None:
        codebook = fit_scale_codebook(gains, spec.scale_bits)
    return codewords, quantize_gains(gains, codebook), codebook


def quantize_matrix(matrix: np.ndarray, spec: PVQSpec) -> QuantizedMatrix:
    """Plain (Hessian-free) PVQ of a kernel [in_features, out_features]."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"kernel must be 2-D [in_features, out_features], got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("kernel contains NaN or infinite values")
    rotated = rotate_rows(pad_rows(matrix, spec.group_size), spec.seed) if spec.rotate else matrix
    codewords, codes, codebook = quantize_groups(to_groups(rotated, spec.group_size), spec)
    return QuantizedMatrix(spec, tuple(matrix.shape), codewords, codes, codebook)


def pad_rows(matrix: np.ndarray, group_size: int) -> np.ndarray:
    rows = padded_rows(matrix.shape[0], group_size)
    return np.pad(matrix, ((0, rows - matrix.shape[0]), (0, 0)))


def dequantize_groups(codewords: np.ndarray, codes: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    return codebook.astype(np.float64)[codes.astype(np.int64)][:, None] * unit_shapes(codewords)


def dequantize_matrix(quantized: QuantizedMatrix) -> np.ndarray:
    """The float32 kernel a QuantizedMatrix stands for (deterministic, bit for bit)."""
    spec = quantized.spec
    rows, cols = quantized.shape
    groups = dequantize_groups(quantized.codewords, quantized.scale_codes, quantized.scale_codebook)
    padded = from_groups(groups, (padded_rows(rows, spec.group_size), cols), spec.group_size)
    if spec.rotate:
        padded = unrotate_rows(padded, spec.seed)
    return padded[:rows].astype(np.float32)


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """10 log10(||W||^2 / ||W - W_hat||^2) (inf when exact)."""
    reference = np.asarray(reference, np.float64)
    error = ((reference - np.asarray(approximation, np.float64)) ** 2).sum()
    signal = (reference**2).sum()
    return float("inf") if error == 0 else float(10 * np.log10(signal / error))


def rtn_quantize(matrix: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, float]:
    """Round-to-nearest baseline: symmetric integers in [-(2^(b-1)-1), 2^(b-1)-1] with a float16
    absmax scale per group of `group_size` input features. Returns (dequantized, bits/weight)."""
    matrix = np.asarray(matrix, np.float64)
    groups = to_groups(matrix, group_size)
    qmax = rtn.max_level(bits)
    scales = rtn.absmax_scale(groups, qmax, axis=-1).astype(np.float16).astype(np.float64)
    scales = np.where(scales > 0, scales, 1.0)
    dequantized = rtn.to_codes(groups, scales, qmax) * scales
    return from_groups(dequantized, matrix.shape, group_size), bits + 16 / group_size

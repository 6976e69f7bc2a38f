"""Hessian-aware PVQ: GPTQ-style error propagation with PVQ as the group quantizer.

GPTQ (Frantar et al. 2023, Alg. 1) quantizes the input columns of W [out, in] one at a
time and moves each column's error onto the not yet quantized columns, using the upper
Cholesky factor U of H^{-1} (U^T U = H^{-1}), where H = X^T X + lambda I and X [n, in]
are calibration inputs of the layer. van der Ouderaa et al. (2024, Sec. 4) use PVQ as
the quantizer inside this loop.

Our choice of groups: a PVQ group is L consecutive *input* features of one output
feature (as in `weights.to_groups`), so the L input columns S = [gL, (g+1)L) are
quantized at once, for every output. Their error E_S = W_S - Q_S is then propagated to
the remaining columns T by the block form of the GPTQ update,

    W_T <- W_T - E_S U_SS^{-1} U_ST,

which is the optimal (OBS) compensation for fixing the whole block S, because the
inverse Hessian of the remaining columns S u T is U_{S u T}^T U_{S u T}. Within a block
the PVQ search minimizes the plain L2 error of each group. The gain codebook is fitted
(Lloyd) once on the gains of plain PVQ of the same (rotated) kernel, then used for
every block. lambda = damping * mean(diag(X^T X)).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from effjax.quant.pvq.weights import (
    PVQSpec,
    QuantizedMatrix,
    dequantize_groups,
    pad_rows,
    padded_rows,
    quantize_groups,
    rotate_rows,
    to_groups,
)


def input_hessian(activations: np.ndarray, in_features: int) -> np.ndarray:
    """X^T X (float64) from calibration inputs [..., in_features]."""
    x = np.asarray(activations, np.float64)
    if x.shape[-1] != in_features:
        raise ValueError(f"calibration activations have {x.shape[-1]} features, the kernel has {in_features} inputs")
    x = x.reshape(-1, in_features)
    return x.T @ x


def damped_inverse_cholesky(hessian: np.ndarray, damping: float) -> np.ndarray:
    """Upper U with U^T U = (H + lambda I)^{-1}, lambda = damping * mean(diag H) (1 if H = 0)."""
    mean_diag = float(np.mean(np.diag(hessian)))
    damped = hessian + damping * (mean_diag if mean_diag > 0 else 1.0) * np.eye(hessian.shape[0])
    inverse = scipy.linalg.cho_solve(scipy.linalg.cho_factor(damped, lower=True), np.eye(hessian.shape[0]))
    return scipy.linalg.cholesky((inverse + inverse.T) / 2, lower=False)


def gptq_quantize_matrix(matrix: np.ndarray, hessian: np.ndarray, spec: PVQSpec, damping: float = 0.01) -> QuantizedMatrix:
    """Hessian-aware PVQ of a kernel [in_features, out_features] given H = X^T X [in, in]."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"kernel must be 2-D [in_features, out_features], got shape {matrix.shape}")
    rows, cols = matrix.shape
    if np.shape(hessian) != (rows, rows):
        raise ValueError(f"hessian must be [{rows}, {rows}], got {np.shape(hessian)}")
    if damping <= 0:
        raise ValueError(f"damping must be > 0, got {damping}")
    L = spec.group_size
    padded = pad_rows(matrix, L)
    n = padded_rows(rows, L)
    hessian_padded = np.zeros((n, n))
    hessian_padded[:rows, :rows] = hessian
    if spec.rotate:
        padded = rotate_rows(padded, spec.seed)
        hessian_padded = rotate_rows(rotate_rows(hessian_padded, spec.seed).T, spec.seed).T
    _, _, codebook = quantize_groups(to_groups(padded, L), spec)

    upper = damped_inverse_cholesky(hessian_padded, damping)
    weights = padded.T.copy()  # [out, in]: GPTQ's layout, columns are input features
    codewords, codes = [], []
    for start in range(0, n, L):
        block = slice(start, start + L)
        block_codewords, block_codes, _ = quantize_groups(weights[:, block], spec, codebook)
        error = weights[:, block] - dequantize_groups(block_codewords, block_codes, codebook)
        rest = slice(start + L, n)
        weights[:, rest] -= error @ scipy.linalg.solve_triangular(upper[block, block], upper[block, rest])
        codewords.append(block_codewords)
        codes.append(block_codes)
    return QuantizedMatrix(spec, (rows, cols), np.concatenate(codewords), np.concatenate(codes), codebook)

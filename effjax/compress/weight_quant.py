"""Post-training weight quantization for export: symmetric, per output channel, round to nearest.

The weight half of AQT's recipe (Abdolrashidi et al., 2021, Sec. 3): scale_j =
max_i |W_ij| / (2^(b-1) - 1), q = clip(round(W / scale), -(2^(b-1) - 1), 2^(b-1) - 1),
W_hat = q * scale. Integers are stored as int8 (b = 8) or two 4-bit codes per byte
(b = 4, offset binary); scales as float32. `payload_bits` counts exactly what is
written, so the bits objective of the search equals the size of the export.
"""

from __future__ import annotations

import numpy as np

SCALE_BITS = 32


def is_kernel(path: str, ndim: int) -> bool:
    """The weights that are quantized: Dense kernels [in, out] and MoE expert kernels [E, in, out]."""
    return (path.endswith("kernel") and ndim == 2) or (path.rsplit("/", 1)[-1] in ("wi", "wo") and ndim == 3)


def quantize_kernel(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(integer codes as int8, float32 scale per output column) of a [..., in, out] kernel."""
    if bits not in (4, 8):
        raise ValueError(f"bits={bits}: allowed 4 or 8 (32 keeps float)")
    w = np.asarray(w, np.float32)
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=-2) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None, :]), -qmax, qmax).astype(np.int8)
    return q, scale


def dequantize_kernel(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) * np.expand_dims(scale.astype(np.float32), -2)).astype(np.float32)


def fake_quantize(w: np.ndarray, bits: int) -> np.ndarray:
    return dequantize_kernel(*quantize_kernel(w, bits))


def pack_int4(q: np.ndarray) -> np.ndarray:
    flat = (q.reshape(-1).astype(np.int16) + 8).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    lo, hi = packed & 0x0F, packed >> 4
    flat = np.stack([lo, hi], axis=1).reshape(-1)[: int(np.prod(shape))]
    return (flat.astype(np.int16) - 8).astype(np.int8).reshape(shape)


def payload_bits(shape: tuple[int, ...], bits: int) -> int:
    """Bits written for one array: codes plus per-column scales, or float32 values."""
    size = int(np.prod(shape))
    if bits >= 32:
        return 32 * size
    return bits * size + SCALE_BITS * (size // shape[-2])

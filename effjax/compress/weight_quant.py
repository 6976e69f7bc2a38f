"""Post-training weight quantization for export: symmetric, per output channel, round to nearest.

The weight half of AQT's recipe (Abdolrashidi et al., 2021, Sec. 3): scale_j =
max_i |W_ij| / (2^(b-1) - 1), q = clip(round(W / scale), -(2^(b-1) - 1), 2^(b-1) - 1),
W_hat = q * scale, computed by the one quantizer `effjax.quant.rtn`. Integers are stored
as int8 (b = 8) or two 4-bit codes per byte (b = 4, `rtn.pack_int4`); scales as float32. `payload_bits` counts exactly what is
written, so the bits objective of the search equals the size of the export.
"""

from __future__ import annotations

import math

import numpy as np

from effjax.quant import rtn

SCALE_BITS = 32


def is_kernel(path: str, ndim: int) -> bool:
    """The weights that are quantized: Dense kernels [in, out] and MoE expert kernels [E, in, out]."""
    return (path.endswith("kernel") and ndim == 2) or (path.rsplit("/", 1)[-1] in ("wi", "wo") and ndim == 3)


def quantize_kernel(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(integer codes as int8, float32 scale per output column) of a [..., in, out] kernel."""
    if bits not in (4, 8):
        raise ValueError(f"bits={bits}: allowed 4 or 8 (32 keeps float)")
    q, scale = rtn.quantize(w, bits, axis=-2)
    return q, scale[..., 0, :]


def dequantize_kernel(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return rtn.dequantize(q, np.expand_dims(scale, -2))


def payload_bits(shape: tuple[int, ...], bits: int) -> int:
    """Bits written for one array: codes plus per-column scales, or float32 values."""
    size = math.prod(shape)
    if bits >= 32:
        return 32 * size
    return bits * size + SCALE_BITS * (size // shape[-2])

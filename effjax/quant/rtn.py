"""The one round-to-nearest weight quantizer and the one int4 packing of effjax.

Symmetric, absmax-scaled integer quantization (the weight half of AQT's recipe,
Abdolrashidi et al., 2021, Sec. 3): for the slices of `w` along the reduction axes,
  scale = max |w| / q_max,   q_max = 2^(b-1) - 1,
  codes = clip(round(w / scale), -q_max, q_max),   w_hat = codes * scale,
with round-half-to-even and a zero scale replaced by 1. QAT (straight-through, with
a possibly traced bit width), zero-shot evaluation, the export, expert bit allocation,
the PVQ baselines and AQT serving all call these functions, so every path computes the
same numbers. Each function takes the array module (`numpy` or `jax.numpy`) as `xp`.

int4 codes are stored two per byte in offset binary (code + 8), the even index in the
low nibble.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from effjax.subnet import FLOAT_BITS

Axis = Union[int, Sequence[int]]


def max_level(bits, xp=np):
    """q_max = 2^(b-1) - 1; `bits` may be a traced scalar when `xp` is jax.numpy (capped at 16 bits)."""
    if isinstance(bits, int):
        return 2 ** (bits - 1) - 1
    return 2.0 ** (xp.minimum(xp.asarray(bits, xp.float32), 16.0) - 1.0) - 1.0


def absmax_scale(w, qmax, axis: Axis = -2, xp=np):
    """max |w| / q_max over `axis` (kept as size-1 axes); zero scales become 1."""
    scale = xp.max(xp.abs(w), axis=axis, keepdims=True) / qmax
    return xp.where(scale > 0, scale, 1.0)


def to_codes(w, scale, qmax, xp=np):
    """clip(round(w / scale), -q_max, q_max), as floats."""
    return xp.clip(xp.round(w / scale), -qmax, qmax)


def quantize(w, bits: int, axis: Axis = -2, xp=np):
    """(int8 codes, float32 scale with size-1 `axis`) of `w` at `bits` (2..8)."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits={bits!r}: allowed integers 2..8 ({FLOAT_BITS} keeps float)")
    w = xp.asarray(w, xp.float32)
    qmax = max_level(bits)
    scale = absmax_scale(w, qmax, axis, xp).astype(xp.float32)
    return to_codes(w, scale, qmax, xp).astype(xp.int8), scale


def dequantize(codes, scale, xp=np):
    return (codes.astype(xp.float32) * scale.astype(xp.float32)).astype(xp.float32)


def fake_quantize(w, bits, axis: Axis = -2, xp=np):
    """w_hat = Q_b(w) in the input's precision; `bits` >= FLOAT_BITS returns `w` (traced bits allowed with jnp).

    q_max is computed once and used for both the scale and the clip (a traced q_max evaluated twice
    may differ in its last bit between XLA fusions)."""
    if not isinstance(bits, int):
        bits = xp.asarray(bits, xp.float32)
    qmax = max_level(bits, xp)
    scale = absmax_scale(w, qmax, axis, xp)
    quantized = to_codes(w, scale, qmax, xp) * scale
    if isinstance(bits, int):
        return w if bits >= FLOAT_BITS else quantized
    return xp.where(bits >= FLOAT_BITS, w, quantized)


def straight_through(w: jax.Array, bits, axis: Axis = -2) -> jax.Array:
    """Q_b(w) in the forward pass with the identity gradient (STE): w + stop_gradient(Q_b(w) - w)."""
    return w + jax.lax.stop_gradient(fake_quantize(w, bits, axis, jnp) - w)


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Signed 4-bit codes (-8..7) -> bytes, two per byte, offset binary, even index in the low nibble."""
    flat = (np.asarray(codes).reshape(-1).astype(np.int16) + 8).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, shape: Sequence[int], xp=np):
    """Inverse of `pack_int4`: int8 codes of `shape` (with jax.numpy, in the traced graph)."""
    packed = xp.asarray(packed)
    flat = xp.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)[: int(np.prod(shape))]
    return (flat.astype(xp.int8) - 8).reshape(tuple(shape))

"""Quantization-aware training of the supernet's weight bits: straight-through fake quantization.

The supernet's bits knob is trained like its widths: the sandwich step draws a
weight-bits value per configuration (possibly a traced scalar) and runs that
configuration on a fake-quantized copy of the parameters,
  W_hat = W + stop_gradient(Q_b(W) - W)      (straight-through estimator),
with Q_b the quantizer the evaluation and the export apply (`effjax.quant.rtn`:
symmetric, per output column, round to nearest, scale = max |W_:j| / (2^(b-1) - 1);
Abdolrashidi et al., 2021, Sec. 3), on the same weights (Dense and expert kernels,
the full max-width kernel, sliced afterwards). Patch embedding and task heads (the
first and last layers) use max(b, 8) bits, as `SubnetConfig.bits_for` prices them.
A value of 32 or more means float.
"""

from __future__ import annotations

from typing import Union

import flax
import jax
import jax.numpy as jnp

from effjax.compress.export import layer_group
from effjax.compress.weight_quant import is_kernel
from effjax.quant import rtn
from effjax.subnet import FLOAT_BITS

Bits = Union[int, jax.Array]


def fake_quantize(w: jax.Array, bits: Bits) -> jax.Array:
    """Q_b(W) with a straight-through gradient; per output column over the input axis (-2)."""
    return rtn.straight_through(w, bits, axis=-2)


def first_last_bits(bits: Bits) -> Bits:
    if isinstance(bits, int):
        return bits if bits >= FLOAT_BITS else max(bits, 8)
    return jnp.where(bits >= FLOAT_BITS, bits, jnp.maximum(bits, 8))


def fake_quantize_params(params, bits: Bits):
    """The parameter tree a configuration with body weight bits `bits` computes with."""
    if isinstance(bits, int) and bits >= FLOAT_BITS:
        return params
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    out = {}
    for path, w in flat.items():
        if is_kernel(path, w.ndim):
            group_bits = first_last_bits(bits) if layer_group(path) in ("embed", "head") else bits
            w = fake_quantize(w, group_bits)
        out[path] = w
    return flax.traverse_util.unflatten_dict(out, sep="/")

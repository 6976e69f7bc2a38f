"""Slimmable layers: one set of max-width parameters, any active width at call time.

Slimmable networks (Yu et al., ICLR 2019) and Universally Slimmable Networks (Yu &
Huang, ICCV 2019): a layer of width c runs the prefix slice W[:c_in, :c_out] of its
max-width kernel (and b[:c_out]). Input widths are read from the input's last axis,
output widths are call arguments, so the widths are static under `jax.jit` and each
width compiles once (a fixed menu of widths means a few cached compiles).

Normalization: LayerNorm over the active slice. Its statistics are computed per
token from the channels that are present, at train and test time alike, so there
are no running statistics that could differ between widths (the reason slimmable
CNNs need switchable BatchNorm or recalibration); the affine scale / bias are the
prefix slices of the max-width ones. `active` additionally lets the caller normalize
a zero-padded input over its first `active` channels with a traced count (used by the
sandwich step, whose random widths arrive through `lax.switch`).

Quantization hooks (`dot_general_provider`, including the attention einsums'
"attention_scores" group) and logical axis names are those of `effjax.models.layers`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.models.layers import (DotGeneralProvider, constrain, default_kernel_init, einsum, injected_dot_general,
                                  resolve_dot_general)

LAYERNORM_EPSILON = 1e-6  # as flax.linen.LayerNorm


def _check_width(name: str, value: int, maximum: int) -> None:
    if not 0 < value <= maximum:
        raise ValueError(f"{name}={value}: must be in [1, {maximum}] (the max width)")


class SlimDense(nn.Module):
    """y = x W[:c_in, :c_out] + b[:c_out]; c_in = x.shape[-1], c_out = `features` (default: max)."""

    max_in_features: int
    max_features: int
    kernel_axes: tuple[Optional[str], Optional[str]]
    group: str
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    kernel_init: Callable = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array, features: Optional[int] = None) -> jax.Array:
        c_in, c_out = x.shape[-1], self.max_features if features is None else features
        _check_width(f"{self.name}: input width", c_in, self.max_in_features)
        _check_width(f"{self.name}: output width", c_out, self.max_features)
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                            (self.max_in_features, self.max_features), self.param_dtype)
        dot_general = resolve_dot_general(self.dot_general_provider, self.group)
        y = dot_general(x.astype(self.dtype), kernel[:c_in, :c_out].astype(self.dtype),
                        (((x.ndim - 1,), (0,)), ((), ())), precision=None)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.kernel_axes[1:]),
                              (self.max_features,), self.param_dtype)
            y = y + bias[:c_out].astype(self.dtype)
        return y


class SlimLayerNorm(nn.Module):
    """LayerNorm over the active channels; scale / bias are prefix slices of max-width ones.

    With `num_widths` > 0 the affine parameters are private per width (one row per menu width,
    the LayerNorm analogue of switchable BatchNorm); the caller passes the row, `width_index`.
    """

    max_features: int
    dtype: Any = jnp.float32
    axis_name: str = "embed"
    num_widths: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, active: Optional[jax.Array] = None, width_index: Optional[int] = None) -> jax.Array:
        c = x.shape[-1]
        _check_width(f"{self.name}: input width", c, self.max_features)
        if self.num_widths:
            if width_index is None or not 0 <= width_index < self.num_widths:
                raise ValueError(f"{self.name}: width_index={width_index!r}: private norms need a menu width index in "
                                 f"[0, {self.num_widths})")
            shape, axes = (self.num_widths, self.max_features), (None, self.axis_name)
        else:
            shape, axes = (self.max_features,), (self.axis_name,)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, axes), shape, jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, axes), shape, jnp.float32)
        if self.num_widths:
            scale, bias = scale[width_index], bias[width_index]
        scale, bias = scale[:c], bias[:c]
        x32 = x.astype(jnp.float32)
        if active is None:
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            mean_sq = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
            keep = None
        else:  # normalize over the first `active` channels of a zero-padded input
            keep = (jnp.arange(c) < active).astype(jnp.float32)
            count = jnp.maximum(active, 1).astype(jnp.float32)
            mean = jnp.sum(x32 * keep, axis=-1, keepdims=True) / count
            mean_sq = jnp.sum(jnp.square(x32) * keep, axis=-1, keepdims=True) / count
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        y = (x32 - mean) * (jax.lax.rsqrt(var + LAYERNORM_EPSILON) * scale) + bias
        if keep is not None:
            y = y * keep
        return y.astype(self.dtype)


class SlimAttention(nn.Module):
    """Multi-head self-attention whose active heads are the first `heads` of `max_heads` (head size fixed)."""

    max_in_features: int
    max_heads: int
    head_dim: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, heads: Optional[int] = None) -> jax.Array:
        heads = self.max_heads if heads is None else heads
        _check_width(f"{self.name}: heads", heads, self.max_heads)
        inner = heads * self.head_dim

        def projection(name, axes, max_in, max_out):
            return SlimDense(max_in, max_out, axes, "attention", dtype=self.dtype,
                             dot_general_provider=self.dot_general_provider, name=name)

        split = lambda t: t.reshape(t.shape[:-1] + (heads, self.head_dim))  # noqa: E731
        max_inner = self.max_heads * self.head_dim
        q = split(projection("query", ("embed", "heads"), self.max_in_features, max_inner)(x, inner))
        k = split(projection("key", ("embed", "heads"), self.max_in_features, max_inner)(x, inner))
        v = split(projection("value", ("embed", "heads"), self.max_in_features, max_inner)(x, inner))
        q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        # the two activation x activation einsums go through the "attention_scores" group (layers.einsum)
        logits_dot, mix_dot = (injected_dot_general(self.dot_general_provider) for _ in range(2))
        logits = einsum("bqhd,bkhd->bhqk", q, k, logits_dot) / jnp.sqrt(self.head_dim).astype(self.dtype)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = einsum("bhqk,bkhd->bqhd", weights, v, mix_dot).reshape(x.shape[:-1] + (inner,))
        return projection("out", ("heads", "embed"), max_inner, self.max_in_features)(out, x.shape[-1])


class SlimMlp(nn.Module):
    """Two-layer GELU MLP with an active hidden width; the output width equals the input width."""

    max_in_features: int
    max_hidden: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, hidden: Optional[int] = None) -> jax.Array:
        hidden = self.max_hidden if hidden is None else hidden
        h = SlimDense(self.max_in_features, self.max_hidden, ("embed", "mlp"), "mlp", dtype=self.dtype,
                      dot_general_provider=self.dot_general_provider, name="wi")(x, hidden)
        h = constrain(nn.gelu(h), ("activation_batch", "activation_length", "activation_mlp"))
        return SlimDense(self.max_hidden, self.max_in_features, ("mlp", "embed"), "mlp", dtype=self.dtype,
                         dot_general_provider=self.dot_general_provider, name="wo")(h, x.shape[-1])

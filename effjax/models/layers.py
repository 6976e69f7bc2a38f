"""Building blocks shared by every effjax model: dense layers with a `dot_general` hook and
logical axis names, LayerNorm and the MLP, each slimmable (attention: `elastic_vit.Attention`).

Quantization (AQT) is injected, as in MaxText, by replacing the `dot_general` a layer
multiplies with: every layer belongs to a *layer group* ("embed", "attention", "mlp",
"head", ...), and a `DotGeneralProvider` maps the group to a factory of dot_general
modules (or None for plain `lax.dot_general`). The two activation x activation einsums
of attention (q.k logits, weights.v mixing) ask for the group "attention_scores"
(`ATTENTION_SCORES_GROUP`) and run through `einsum(..., dot_general=)`, so a provider
quantizes them too; with no provider they are plain `jnp.einsum`. Parameters carry
logical axis names; activations are constrained with logical names too, so one rules
table (in the config) decides every sharding.

Slimmable layers (Yu et al., ICLR 2019; Yu & Huang, ICCV 2019) hold one set of max-width
parameters and run any active width: a layer of width c uses the prefix slice
W[:c_in, :c_out] (and b[:c_out]). Input widths are read from the input's last axis,
output widths are call arguments, so widths are static under `jax.jit` and a fixed menu
compiles a few programs. Their LayerNorm normalizes over the active slice, per token, at
train and test time alike, so no running statistics differ between widths; `active`
normalizes a zero-padded input over its first `active` channels with a traced count (the
sandwich step's random widths arrive through `lax.switch`). At full width a slimmable
layer computes what its plain counterpart computes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# group name -> factory returning a dot_general-compatible callable (a Flax module
# instance created inside the calling module, e.g. AQT's AqtDotGeneral), or None.
DotGeneralProvider = Callable[[str], Optional[Callable[[], Callable]]]

default_kernel_init = nn.initializers.xavier_uniform()

# Modules add already-weighted auxiliary losses (MoE load balance, router z-loss,
# distillation terms) with `self.sow(AUX_LOSS_COLLECTION, name, value)`; the train
# step adds their sum to the task loss.
AUX_LOSS_COLLECTION = "aux_loss"


# Group of the activation x activation einsums of attention: both operands are
# activations, so a quantizing provider must not treat the right-hand one as a weight.
ATTENTION_SCORES_GROUP = "attention_scores"


def resolve_dot_general(provider: Optional[DotGeneralProvider], group: str) -> Callable:
    factory = provider(group) if provider is not None else None
    return factory() if factory is not None else lax.dot_general


def injected_dot_general(provider: Optional[DotGeneralProvider], group: str = ATTENTION_SCORES_GROUP
                         ) -> Optional[Callable]:
    """The group's injected dot_general, or None where the provider leaves it plain.

    Call it inside a module's compact `__call__` (the factory may create a submodule,
    e.g. an AqtDotGeneral), once per einsum: each einsum needs its own instance.
    """
    factory = provider(group) if provider is not None else None
    return factory() if factory is not None else None


def einsum(subscripts: str, lhs: jax.Array, rhs: jax.Array, dot_general: Optional[Callable] = None) -> jax.Array:
    """Two-operand einsum through `dot_general` (e.g. AQT's); None is `jnp.einsum`, bit for bit.

    Indices in both operands and the output are batch axes, indices in both operands
    only are contracted, the others are free; each index must appear in the output
    or in both operands (no implicit sums over one operand).
    """
    if dot_general is None:
        return jnp.einsum(subscripts, lhs, rhs)
    inputs, _, out = subscripts.replace(" ", "").partition("->")
    a, _, b = inputs.partition(",")
    if (not out or not b or len(a) != lhs.ndim or len(b) != rhs.ndim
            or any(len(set(t)) != len(t) for t in (a, b, out))
            or any(c not in out and c not in (b if c in a else a) for c in a + b)
            or any(c not in a + b for c in out)):
        raise ValueError(f"einsum: subscripts={subscripts!r}: need 'lhs,rhs->out' matching the operand ranks, "
                         "indices unique per term, each one in the output or in both operands")
    batch = [c for c in a if c in b and c in out]
    contract = [c for c in a if c in b and c not in out]
    dims = ((tuple(a.index(c) for c in contract), tuple(b.index(c) for c in contract)),
            (tuple(a.index(c) for c in batch), tuple(b.index(c) for c in batch)))
    y = dot_general(lhs, rhs, dims, precision=None)
    produced = batch + [c for c in a if c not in b] + [c for c in b if c not in a]
    order = tuple(produced.index(c) for c in out)
    return y if order == tuple(range(len(order))) else jnp.transpose(y, order)


def constrain(x: jax.Array, names: Sequence[Optional[str]]) -> jax.Array:
    """Logical sharding constraint; a no-op outside a mesh/rules context."""
    return nn.with_logical_constraint(x, tuple(names))


def mesh_axes(logical: str) -> tuple[str, ...]:
    """The mesh axes the rules in context map a logical axis name to (empty outside a rules context)."""
    spec = nn.logical_to_mesh_axes((logical,), nn.get_logical_axis_rules())
    axes = spec[0] if spec is not None and len(spec) else None
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


LAYERNORM_EPSILON = 1e-6  # as flax.linen.LayerNorm


def _check_width(name: str, value: int, maximum: int) -> None:
    if not 0 < value <= maximum:
        raise ValueError(f"{name}={value}: must be in [1, {maximum}] (the max width)")


class SlimDense(nn.Module):
    """y = x W[:c_in, :c_out] + b[:c_out]; c_in = x.shape[-1], c_out = `features` (default: max).
    `max_in_features` None: the input's width (a plain dense layer, `Dense`)."""

    max_in_features: Optional[int]
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
        max_in = self.max_in_features or c_in
        _check_width(f"{self.name}: input width", c_in, max_in)
        _check_width(f"{self.name}: output width", c_out, self.max_features)
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                            (max_in, self.max_features), self.param_dtype)
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
    `max_features` None: the input's width (a plain LayerNorm, `LayerNorm`).

    With `num_widths` > 0 the affine parameters are private per width (one row per menu width,
    the LayerNorm analogue of switchable BatchNorm); the caller passes the row, `width_index`.
    """

    max_features: Optional[int]
    dtype: Any = jnp.float32
    axis_name: str = "embed"
    num_widths: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, active: Optional[jax.Array] = None, width_index: Optional[int] = None) -> jax.Array:
        c = x.shape[-1]
        max_features = self.max_features or c
        _check_width(f"{self.name}: input width", c, max_features)
        if self.num_widths:
            if width_index is None or not 0 <= width_index < self.num_widths:
                raise ValueError(f"{self.name}: width_index={width_index!r}: private norms need a menu width index in "
                                 f"[0, {self.num_widths})")
            shape, axes = (self.num_widths, max_features), (None, self.axis_name)
        else:
            shape, axes = (max_features,), (self.axis_name,)
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


class SlimMlp(nn.Module):
    """Two-layer GELU MLP with an active hidden width; the output width equals the input width.
    `max_in_features` None: the input's width (a plain MLP, `Mlp`)."""

    max_in_features: Optional[int]
    max_hidden: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, hidden: Optional[int] = None) -> jax.Array:
        hidden = self.max_hidden if hidden is None else hidden
        max_in = self.max_in_features or x.shape[-1]
        h = SlimDense(max_in, self.max_hidden, ("embed", "mlp"), "mlp", dtype=self.dtype,
                      dot_general_provider=self.dot_general_provider, name="wi")(x, hidden)
        h = constrain(nn.gelu(h), ("activation_batch", "activation_length", "activation_mlp"))
        return SlimDense(self.max_hidden, max_in, ("mlp", "embed"), "mlp", dtype=self.dtype,
                         dot_general_provider=self.dot_general_provider, name="wo")(h, x.shape[-1])


Dense = functools.partial(SlimDense, None)  # Dense(features, kernel_axes, group, ...): y = x W + b at the input's width
Mlp = functools.partial(SlimMlp, None)  # Mlp(hidden_dim, dtype, dot_general_provider): the plain two-layer GELU MLP
LayerNorm = functools.partial(SlimLayerNorm, None)  # LayerNorm(dtype): over the whole last axis

"""The main job's supernet: one multi-task ViT that is slimmable, sparse-attention and MoE at once.

Every compressed model effjax searches is a configuration of this network (issue 9,
step 1). Its knobs are the `SubnetConfig` fields it reads at call time:

  - `encoder_width`, `decoder_widths`: slimmable widths, exactly as `slim_vit`
    (Efficient Controllable Multi-Task Architectures; prefix slices of max-width
    kernels, LayerNorm over the active slice), by inheritance from
    `SlimMultiTaskViT`, whose `encode` / `decode` split the sandwich step uses;
  - `attention_keep_ratio`: Sparsifiner (Wei et al., CVPR 2023) instance-dependent
    attention masks in the blocks of `sparse_layers`: a connectivity predictor per
    layer (`sparse_attention.ConnectivityPredictor`, shared over heads, so it serves
    any number of active heads) scores every (query, key) pair and each query row
    keeps its top ceil(rho N) keys (class-token row dense). Training and traced
    keep ratios use the masked path; evaluation at a fixed rho < 1 computes only the
    kept pairs (the gathered path). The predictor learns by distillation to the
    detached dense attention of the full-width pass (Sparsifiner's stage 1 loss,
    sum-MSE per row, averaged over rows) sown as an auxiliary loss, its inputs detached so it never
    pulls on the backbone;
  - `moe_top_k`: in every `moe_every`-th block the MLP is a mixture of experts
    (M3ViT / GShard top-k routing, one router shared by the tasks, load-balance and
    router z-losses as auxiliary losses, capacity-based gather dispatch from
    `effjax.models.moe`). The token width slims the router and the experts' input
    and output rows; the expert hidden width stays whole (logical axis
    `expert_mlp`, so the export never slices it).

Bits are not a call-time knob of the module: quantization-aware training fake-
quantizes the parameter tree before the call (`effjax.compress.qat`), and evaluation
and export quantize the stored weights, so all three see the same numbers.

Keep ratio and top-k may be traced scalars inside `encode` (the sandwich step draws
them per configuration inside one jitted step): the keep count and the routing
mask are then computed from the traced value with statically shaped arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.data.specs import TaskSpec
from effjax.models import moe
from effjax.models import sparse_attention as sa
from effjax.models.layers import (AUX_LOSS_COLLECTION, DotGeneralProvider, constrain, einsum, injected_dot_general,
                                  resolve_dot_general)
from effjax.models.slim_vit import DEFAULT_WIDTH_MENU, SlimMultiTaskViT, check_width_menu
from effjax.models.slimmable import SlimDense, SlimLayerNorm, SlimMlp
from effjax.models.vit import HEAD_DEFAULTS, head_fields, vit_fields
from effjax.subnet import SubnetConfig, decoder_width, encoder_widths, moe_block_indices, predictor_rank

Scalar = Union[int, float, jax.Array]
SUPERNET_KNOBS = ("encoder_width", "decoder_widths", "attention_keep_ratio", "moe_top_k")


def kept_key_mask(scores: jax.Array, keep_ratio: Scalar) -> jax.Array:
    """Mask [B, H, n, n]: each query row 1..n-1 keeps its top ceil(rho n) keys of `scores`
    [B, H, n-1, n]; the class-token row keeps all. `keep_ratio` may be traced."""
    n = scores.shape[-1]
    count = jnp.clip(jnp.ceil(jnp.asarray(keep_ratio, jnp.float32) * n - 1e-6), 1, n).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(-scores, axis=-1, stable=True), axis=-1)  # ties: lower key index first, as top_k
    rows = rank < count
    b, h = scores.shape[:2]
    return jnp.concatenate([jnp.ones((b, h, 1, n), bool), rows], axis=2)


def predictor_distillation_loss(approx: jax.Array, dense_weights: jax.Array) -> jax.Array:
    """Sparsifiner stage 1: the squared error to the detached dense attention, summed over a
    row's keys and averaged over rows 1..n-1 (the class-token row is always dense), heads and
    examples."""
    target = jax.lax.stop_gradient(dense_weights[:, :, 1:]).astype(jnp.float32)
    return jnp.sum((approx.astype(jnp.float32) - target) ** 2, axis=-1).mean()


class SuperAttention(nn.Module):
    """Slimmable multi-head attention (same projection names as `SlimAttention`) with an
    optional connectivity predictor."""

    max_in_features: int
    max_heads: int
    head_dim: int
    num_tokens: int
    sparse: bool
    predictor_channels: int = 4
    predictor_token_reduction: int = 8
    predictor_top_coefficients: int = 4
    predictor_basis_threshold: float = 0.02
    predictor_distill_weight: float = 1.0
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, heads: int, keep_ratio: Scalar, path: str, distill: bool) -> jax.Array:
        inner, max_inner = heads * self.head_dim, self.max_heads * self.head_dim

        def projection(name, axes, max_in, max_out):
            return SlimDense(max_in, max_out, axes, "attention", dtype=self.dtype,
                             dot_general_provider=self.dot_general_provider, name=name)

        heads_first = lambda t: t.reshape(t.shape[:-1] + (heads, self.head_dim)).transpose(0, 2, 1, 3)  # noqa: E731
        q = heads_first(projection("query", ("embed", "heads"), self.max_in_features, max_inner)(x, inner))
        k = heads_first(projection("key", ("embed", "heads"), self.max_in_features, max_inner)(x, inner))
        v = heads_first(projection("value", ("embed", "heads"), self.max_in_features, max_inner)(x, inner))
        q = constrain(q, ("activation_batch", "activation_heads", "activation_length", None))
        scale = self.head_dim**-0.5
        static_dense = isinstance(keep_ratio, (int, float)) and keep_ratio >= 1
        predictor = None
        if self.sparse:
            predictor = sa.ConnectivityPredictor(
                self.max_heads, self.num_tokens, self.predictor_channels,
                predictor_rank(self.num_tokens, self.predictor_token_reduction), self.predictor_top_coefficients,
                self.predictor_basis_threshold, self.dtype, self.dot_general_provider, name="predictor")
            if self.is_initializing():
                predictor(q, k, self._positions(x), reconstruct=True)
        dots = tuple(injected_dot_general(self.dot_general_provider) for _ in range(2))  # logits, mixing (AQT)
        if predictor is None or static_dense:
            out, _, weights = sa.sparse_attention(q, k, v, None, scale, "masked", dot_generals=dots)
            if predictor is not None and distill and self.predictor_distill_weight:
                approx = predictor(jax.lax.stop_gradient(q), jax.lax.stop_gradient(k), self._positions(x),
                                   reconstruct=True)
                self.sow(AUX_LOSS_COLLECTION, "predictor_distillation",
                         self.predictor_distill_weight * predictor_distillation_loss(approx, weights))
        else:
            approx = predictor(q, k, self._positions(x))
            if path == "gathered":
                out, _, _ = sa.sparse_attention(q, k, v, sa.predicted_key_indices(approx, keep_ratio), scale, "gathered",
                                                dot_generals=dots)
            else:
                out, _ = sa.attention_with_mask(q, k, v, kept_key_mask(approx, keep_ratio), scale, dot_generals=dots)
        out = out.transpose(0, 2, 1, 3).reshape(x.shape[:-1] + (inner,))
        return projection("out", ("heads", "embed"), max_inner, self.max_in_features)(out, x.shape[-1])

    @staticmethod
    def _positions(x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), x.shape[:2])


class SuperMoe(nn.Module):
    """Top-k mixture of GELU experts over the active token width (one router for all tasks)."""

    max_in_features: int
    num_experts: int
    expert_dim: int
    capacity_factor: float = 1.25
    dispatch: str = "gather"
    balance_weight: float = 0.01
    z_loss_weight: float = 1e-3
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, top_k: Scalar, max_top_k: int) -> jax.Array:
        """`top_k` experts per token; when it is traced, routing selects `max_top_k` and masks the rest."""
        b, s, d = x.shape
        e, m, big_d = self.num_experts, self.expert_dim, self.max_in_features
        router = self.param("router", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", None)),
                            (big_d, e), jnp.float32)
        init = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
        w = moe.ExpertWeights(
            self.param("wi", nn.with_logical_partitioning(init, ("expert", "embed", "expert_mlp")), (e, big_d, m),
                       jnp.float32)[:, :d],
            self.param("bi", nn.with_logical_partitioning(nn.initializers.zeros, ("expert", "expert_mlp")), (e, m),
                       jnp.float32),
            self.param("wo", nn.with_logical_partitioning(init, ("expert", "expert_mlp", "embed")), (e, m, big_d),
                       jnp.float32)[:, :, :d],
            self.param("bo", nn.with_logical_partitioning(nn.initializers.zeros, ("expert", "embed")), (e, big_d),
                       jnp.float32)[:, :d],
        )
        static_k = isinstance(top_k, int)
        k_routed = top_k if static_k else max_top_k
        if not 1 <= k_routed <= e:
            raise ValueError(f"moe_top_k={k_routed}: must be in [1, num_experts={e}]")
        logits = einsum("bsd,de->bse", x.astype(jnp.float32), router[:d],
                        injected_dot_general(self.dot_general_provider, "router"))
        routing = moe.top_k_routing(logits, k_routed)
        if not static_k:
            valid = routing.valid & (jnp.arange(k_routed) < top_k)
            routing = routing._replace(valid=valid, gate=jnp.where(valid, routing.gate, 0.0))
        if self.balance_weight:
            self.sow(AUX_LOSS_COLLECTION, "balance_loss", self.balance_weight * moe.load_balance_loss(routing))
        if self.z_loss_weight:
            self.sow(AUX_LOSS_COLLECTION, "router_z_loss", self.z_loss_weight * moe.router_z_loss(routing.logits))
        capacity = moe.expert_capacity(s, e, k_routed, self.capacity_factor)
        active_capacity = None
        if not static_k and self.capacity_factor > 0:  # the capacity a static top_k would have
            wanted = jnp.ceil(self.capacity_factor * s * jnp.asarray(top_k, jnp.float32) / e)
            active_capacity = jnp.clip(wanted, 1, s).astype(jnp.int32)
        dot_general = resolve_dot_general(self.dot_general_provider, "expert")
        return moe.moe_capacity_path(x.astype(self.dtype), routing, w, capacity, self.dispatch,
                                     (dot_general, dot_general), active_capacity)


class SuperBlock(nn.Module):
    max_dim: int
    max_heads: int
    max_mlp: int
    sparse: bool
    use_moe: bool
    attention: dict  # SuperAttention predictor fields
    experts: dict  # SuperMoe fields besides max_in_features
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x, heads: int, mlp: int, keep_ratio: Scalar, top_k: Scalar, max_top_k: int, path: str,
                 distill: bool) -> jax.Array:
        attention = SuperAttention(self.max_dim, self.max_heads, self.max_dim // self.max_heads, x.shape[1],
                                   self.sparse, dtype=self.dtype, dot_general_provider=self.dot_general_provider,
                                   name="attention", **self.attention)
        x = x + attention(SlimLayerNorm(self.max_dim, self.dtype, name="ln_attention")(x), heads, keep_ratio, path,
                          distill)
        y = SlimLayerNorm(self.max_dim, self.dtype, name="ln_mlp")(x)
        if self.use_moe:
            y = SuperMoe(self.max_dim, dtype=self.dtype, dot_general_provider=self.dot_general_provider, name="moe",
                         **self.experts)(y, top_k, max_top_k)
        else:
            y = SlimMlp(self.max_dim, self.max_mlp, self.dtype, self.dot_general_provider, name="mlp")(y, mlp)
        return constrain(x + y, ("activation_batch", "activation_length", "activation_embed"))


class SuperViT(SlimMultiTaskViT):
    sparse_layers: tuple[int, ...] = ()  # blocks with a connectivity predictor
    moe_every: int = 0  # every moe_every-th block has a MoE MLP; 0: none
    num_experts: int = 4
    expert_dim: int = 64
    default_top_k: int = 2  # experts per token when the subnet says 0
    capacity_factor: float = 1.25
    balance_weight: float = 0.01
    z_loss_weight: float = 1e-3
    predictor_channels: int = 4
    predictor_token_reduction: int = 8
    predictor_top_coefficients: int = 4
    predictor_basis_threshold: float = 0.02
    predictor_distill_weight: float = 1.0

    def make_blocks(self) -> list[nn.Module]:
        """SlimMultiTaskViT's setup with these blocks: Sparsifiner attention in `sparse_layers`,
        a MoE MLP in every `moe_every`-th block."""
        bad = [i for i in self.sparse_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"model.sparse_layers={self.sparse_layers!r}: block indices must be in [0, {self.num_layers})")
        if not 1 <= self.default_top_k <= self.num_experts:
            raise ValueError(f"model.top_k={self.default_top_k}: must be in [1, model.num_experts={self.num_experts}]")
        attention = dict(predictor_channels=self.predictor_channels,
                         predictor_token_reduction=self.predictor_token_reduction,
                         predictor_top_coefficients=self.predictor_top_coefficients,
                         predictor_basis_threshold=self.predictor_basis_threshold,
                         predictor_distill_weight=self.predictor_distill_weight)
        experts = dict(num_experts=self.num_experts, expert_dim=self.expert_dim, capacity_factor=self.capacity_factor,
                       balance_weight=self.balance_weight, z_loss_weight=self.z_loss_weight)
        moe_blocks = set(moe_block_indices(self.num_layers, self.moe_every)) if self.moe_every else set()
        return [SuperBlock(self.hidden_dim, self.num_heads, self.mlp_dim, i in self.sparse_layers, i in moe_blocks,
                           attention, experts, self.dtype, self.dot_general_provider)
                for i in range(self.num_layers)]

    def encode(self, images: jax.Array, encoder_width: float = 1.0, keep_ratio: Scalar = 1.0,
               top_k: Optional[Scalar] = None, max_top_k: Optional[int] = None, path: str = "masked",
               distill: bool = False) -> jax.Array:
        """Encoder output tokens at a width (static) and a keep ratio / top-k (static or traced).

        `path`: "masked" (training, traced knobs) or "gathered" (only the kept pairs; static
        keep ratio). `distill`: sow the predictors' distillation loss (full-width dense pass).
        """
        heads, hidden, mlp = encoder_widths(self.hidden_dim, self.num_heads, self.mlp_dim, encoder_width)
        top_k = self.default_top_k if top_k is None else top_k
        max_top_k = max_top_k or (top_k if isinstance(top_k, int) else self.num_experts)
        x = self.embedding(images, hidden)
        for block in self.blocks:
            x = block(x, heads, mlp, keep_ratio, top_k, max_top_k, path, distill)
        return self.ln_final(x)

    def check_subnet(self, subnet: SubnetConfig) -> None:
        defaults = SubnetConfig()
        others = {f.name: getattr(subnet, f.name) for f in dataclasses.fields(subnet)
                  if f.name not in SUPERNET_KNOBS and getattr(subnet, f.name) != getattr(defaults, f.name)}
        if others:
            raise ValueError(f"model super_vit reads only {list(SUPERNET_KNOBS)} at call time (bits are applied to "
                             f"the weights: use subnet.without_bits()); got non-default {others}")
        names = {t.name for t in self.tasks}
        unknown = [name for name, _ in subnet.decoder_widths if name not in names]
        if unknown:
            raise ValueError(f"SubnetConfig.decoder_widths: unknown tasks {unknown}; tasks: {sorted(names)}")
        if subnet.moe_top_k > self.num_experts:
            raise ValueError(f"SubnetConfig.moe_top_k={subnet.moe_top_k}: must be <= model.num_experts={self.num_experts}")

    def __call__(self, images: jax.Array, train: bool = False, subnet: Optional[SubnetConfig] = None,
                 return_features: bool = False):
        """Predictions per task at `subnet` (default: the full network, dense attention,
        `default_top_k` experts). Training runs the masked path and sows the predictor loss."""
        subnet = subnet or SubnetConfig()
        self.check_subnet(subnet)
        tokens = self.encode(images, subnet.encoder_width, subnet.attention_keep_ratio, subnet.moe_top_k or None,
                             path="masked" if train else "gathered", distill=train)
        hw = images.shape[1:3]
        preds = {t.name: self.heads[t.name](tokens, decoder_width(self.decoder_dim, subnet.decoder_width(t.name)), hw)
                 for t in self.tasks}
        return (preds, tokens) if return_features else preds


def build(model_config, tasks: Sequence[TaskSpec], dot_general_provider=None) -> SuperViT:
    """The registry's builder (`config.model.name = "super_vit"`)."""
    get = model_config.get
    unsupported = {k: v for k, v in head_fields(model_config).items() if v != HEAD_DEFAULTS[k]}
    if get("private_norms", False):
        unsupported["private_norms"] = True
    if unsupported:
        raise ValueError(f"model super_vit: {unsupported} are slim_vit study options, not supported here")
    return SuperViT(
        **vit_fields(model_config, tasks, dot_general_provider),
        width_menu=check_width_menu(get("width_menu", DEFAULT_WIDTH_MENU)),
        sparse_layers=tuple(get("sparse_layers", ())),
        moe_every=int(get("moe_every", 0)),
        num_experts=int(get("num_experts", 4)),
        expert_dim=int(get("expert_dim", 64)),
        default_top_k=int(get("top_k", 2)),
        capacity_factor=float(get("capacity_factor", 1.25)),
        balance_weight=float(get("balance_weight", 0.01)),
        z_loss_weight=float(get("z_loss_weight", 1e-3)),
        predictor_channels=int(get("predictor_channels", 4)),
        predictor_token_reduction=int(get("predictor_token_reduction", 8)),
        predictor_top_coefficients=int(get("predictor_top_coefficients", 4)),
        predictor_basis_threshold=float(get("predictor_basis_threshold", 0.02)),
        predictor_distill_weight=float(get("predictor_distill_weight", 1.0)),
    )

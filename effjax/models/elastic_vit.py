"""One elastic multi-task ViT: every compressed model effjax trains or searches is a configuration of it.

The network is a pre-norm ViT encoder (Dosovitskiy et al., 2021: patch embedding, class
token, learned positions, blocks x + Attn(LN(x)); x + MLP(LN(x)), final LayerNorm) shared by
one head per task: an image-level task reads the class token through a small MLP decoder
(or, with `image_head="mean_pool"`, runs its hidden layer on every token and averages); a
dense task decodes each patch token into its p x p pixels ("linear unpatchify", as in
SETR-naive). `decoder_blocks` > 0 puts task-specific blocks before each head.

Per block, the spec chooses the attention and the MLP:
  - attention: dense, or Sparsifiner (Wei et al., CVPR 2023) in the blocks of
    `sparse_layers`: a connectivity predictor (`sparse_attention.ConnectivityPredictor`,
    shared over heads, so it serves any number of active heads) scores every (query, key)
    pair and each query row keeps its top ceil(rho N) keys (class-token row dense).
    Training and traced keep ratios use the masked path; evaluation at a fixed rho < 1
    computes only the kept pairs (the gathered path). The predictor learns by
    distillation to the detached dense attention of the full pass (Sparsifiner's stage-1
    sum-MSE per row), sown as an auxiliary loss with detached inputs;
  - MLP: dense, or in every `moe_every`-th block a mixture of experts (GShard / M3ViT top-k
    routing, one router shared by the tasks, load-balance and router z-losses as auxiliary
    losses, capacity-based dispatch from `effjax.models.moe`).

Every width is slimmable (Efficient Controllable Multi-Task Architectures, Aich et al.,
ICCV 2023): `encoder_width` slims the encoder (attention heads at a fixed head size, hence
the token width, and the MLP width; the router and the experts' input/output rows follow
the token width, the expert hidden width stays whole), each task's decoder width slims its
head. LayerNorm runs over the active slice; `private_norms` keeps one affine per menu width
(the LayerNorm analogue of switchable BatchNorm). Integer widths come from
`effjax.subnet`, the rounding the cost model prices.

The knobs are the `SubnetConfig` fields read at call time: encoder and decoder widths,
attention keep ratio, experts per token. Keep ratio and top-k may be traced scalars inside
`encode` (the sandwich step and the search draw them inside one compiled program). Weight
bits are not a call-time knob: quantization-aware training fake-quantizes the parameters
before the call (`effjax.compress.qat`), evaluation and export quantize the stored weights,
and AQT serving goes through the `dot_general` hook of `effjax.models.layers`.

Token pruning (`token_pruning_layers`, knob `token_keep_ratio`; `effjax.models.token_pruning`)
and the random-mask baseline (`mask_scores="random"`) serve the Sparsifiner studies; `capture`
sows each sparse layer's attention for Sparsifiner's stage-1 distillation
(`effjax.train.sparsifiner_steps`).

The model families are presets of this class (`effjax.models.registry`): `mt_vit` (the dense
multi-task ViT: the full configuration, nothing elastic in its config), `slim_vit` (widths),
`sparse_vit` (Sparsifiner in every block, token pruning) and `super_vit` (widths, Sparsifiner,
MoE and QAT bits at once). `moe_vit` (M3ViT's per-task encoder passes, which do not fit one
encoder pass) is a thin variant built from this module's parts (`Embedding`, `Block`,
`Attention`, `TaskHead`). Parameter names follow `effjax.models.param_names`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.config.base import base_config
from effjax.data.specs import TaskSpec
from effjax.models import block_sparse as bs
from effjax.models import moe, token_pruning
from effjax.models import sparse_attention as sa
from effjax.models.layers import (AUX_LOSS_COLLECTION, DotGeneralProvider, SlimDense, SlimLayerNorm, SlimMlp, constrain,
                                  einsum, injected_dot_general, resolve_dot_general)
from effjax.models.vit import (MultiTaskFields, check_decoder_blocks, check_image_head, config_reader, patchify,
                               unpatchify, vit_fields)
from effjax.subnet import (SubnetConfig, decoder_width, encoder_widths, kept_token_count, moe_block_indices,
                           predictor_rank)

Scalar = Union[int, float, jax.Array]
# the SubnetConfig fields read at call time
KNOBS = ("encoder_width", "decoder_widths", "attention_keep_ratio", "token_keep_ratio", "moe_top_k")
INTERMEDIATES = "intermediates"  # collection of what `capture` sows, and of the final tokens
MASK_SCORES = ("predictor", "random")
ATTENTION_PATHS = ("auto", "masked", "gathered")  # auto: masked when training or capturing, gathered otherwise
_MODEL = base_config().model  # every field's default and meaning is written once, in effjax/config/base.py


def check_width_menu(menu: Sequence[float]) -> tuple[float, ...]:
    menu = tuple(float(w) for w in menu)
    if not menu or any(not 0 < w <= 1 for w in menu) or len(set(menu)) != len(menu) or 1.0 not in menu:
        raise ValueError(f"width_menu={menu!r}: need distinct widths in (0, 1] including 1.0")
    return tuple(sorted(menu))


def _ordered_keys(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (negative floats: bits inverted; others: sign bit set); -0.0 and
    0.0 map to the same key, as they compare equal in a sort."""
    x = x.astype(jnp.float32)
    u = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.float32(0), x), jnp.uint32)
    return jnp.where(u >> 31, ~u, u | jnp.uint32(0x80000000))


def top_count_mask(scores: jax.Array, count: jax.Array) -> jax.Array:
    """Boolean mask of the `count` largest entries of each row of `scores` (last axis); ties go to the lower
    index first, as `lax.top_k` and a stable descending argsort. `count` [..., 1] or scalar, may be traced.

    No sort: the count-th largest value is found by bisection over the 32 bits of an order-preserving
    integer key (32 compare-and-count passes), which on CPU is ~7x faster than ranking by argsort at
    n = 257 keys per row.
    """
    key = _ordered_keys(scores)
    count = jnp.broadcast_to(jnp.asarray(count, jnp.int32), scores.shape[:-1] + (1,))

    def set_bit(i, kth):
        candidate = kth | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        enough = jnp.sum(key >= candidate, axis=-1, keepdims=True, dtype=jnp.int32) >= count
        return jnp.where(enough, candidate, kth)

    kth = jax.lax.fori_loop(0, 32, set_bit, jnp.zeros(scores.shape[:-1] + (1,), jnp.uint32))
    above, tie = key > kth, key == kth
    before = jnp.sum(above, axis=-1, keepdims=True, dtype=jnp.int32)
    return above | (tie & (before + jnp.cumsum(tie, axis=-1, dtype=jnp.int32) <= count))


def kept_key_mask(scores: jax.Array, keep_ratio: Scalar) -> jax.Array:
    """Mask [B, H, n, n]: each query row 1..n-1 keeps its top ceil(rho n) keys of `scores`
    [B, H, n-1, n] (ties: lower key index first, as top_k); the class-token row keeps all.
    `keep_ratio` may be traced."""
    n = scores.shape[-1]
    count = jnp.clip(jnp.ceil(jnp.asarray(keep_ratio, jnp.float32) * n - 1e-6), 1, n).astype(jnp.int32)
    rows = top_count_mask(scores, count)
    b, h = scores.shape[:2]
    return jnp.concatenate([jnp.ones((b, h, 1, n), bool), rows], axis=2)


def kept_block_mask(scores: jax.Array, keep_ratio: Scalar, block: int) -> jax.Array:
    """Mask [B, H, n, n] of block-sparse attention: each query block of rows 1..n-1 keeps the keys of its top
    ceil(rho n / b) key blocks by mean score (`block_sparse.coarsen_scores`); the class-token row keeps all.
    `keep_ratio` may be traced; at a fixed ratio this is `block_connectivity_mask` of `top_key_blocks`."""
    n = scores.shape[-1]
    coarse = bs.coarsen_scores(scores, block)
    count = jnp.clip(jnp.ceil(jnp.asarray(keep_ratio, jnp.float32) * n / block - 1e-6), 1, coarse.shape[-1])
    rank = jnp.argsort(jnp.argsort(-coarse, axis=-1, stable=True), axis=-1)  # ties: lower block first, as top_k
    return bs.chosen_blocks_mask(rank < count.astype(jnp.int32), n, block)


def predictor_distillation_loss(approx: jax.Array, dense_weights: jax.Array) -> jax.Array:
    """Sparsifiner stage 1: the squared error to the detached dense attention, summed over a
    row's keys and averaged over rows 1..n-1 (the class-token row is always dense), heads and
    examples."""
    target = jax.lax.stop_gradient(dense_weights[:, :, 1:]).astype(jnp.float32)
    return jnp.sum((approx.astype(jnp.float32) - target) ** 2, axis=-1).mean()


class Embedding(nn.Module):
    """Patch embedding + class token + learned positions, sliced to the active token width."""

    max_dim: int
    patch_size: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, images: jax.Array, width: int) -> jax.Array:
        x = self.embed_patches(patchify(images.astype(self.dtype), self.patch_size), width)
        cls = self.param("cls", nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
                         (1, 1, self.max_dim))[..., :width]
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, width)).astype(self.dtype), x], axis=1)
        pos_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "position", "embed"))
        pos = self.param("pos_embedding", pos_init, (1, x.shape[1], self.max_dim))[..., :width]
        return constrain(x + pos.astype(self.dtype), ("activation_batch", "activation_length", "activation_embed"))

    def embed_patches(self, patches: jax.Array, width: int) -> jax.Array:
        """Patch tokens [B, P, width] from flattened patches [B, P, p*p*C]: one slimmable linear layer. A
        subclass may run a stem of its own here; its layers are created inline and belong to the embedding."""
        return SlimDense(patches.shape[-1], self.max_dim, ("patch", "embed"), "embed", dtype=self.dtype,
                         dot_general_provider=self.dot_general_provider, name="patch_embed")(patches, width)


class Attention(nn.Module):
    """Multi-head self-attention whose active heads are the first `heads` of `max_heads` (head size
    fixed), with a connectivity predictor when `sparse`."""

    max_in_features: int
    max_heads: int
    head_dim: int
    num_tokens: int = 0  # sequence length the predictor is sized for (sparse only)
    sparse: bool = False
    predictor_channels: int = 4
    predictor_token_reduction: int = 8
    predictor_top_coefficients: int = 4
    predictor_basis_threshold: float = 0.02
    predictor_distill_weight: float = 1.0
    block: int = 0  # > 0: keep whole key blocks of this size (block-sparse attention), not single keys
    mask_scores: str = "predictor"  # predictor | random (the random-mask baseline: uniform scores choose the keys)
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, heads: Optional[int] = None, keep_ratio: Scalar = 1.0, path: str = "masked",
                 distill: bool = False, positions: Optional[jax.Array] = None, capture: bool = False,
                 class_weights: bool = False):
        """Returns y [B, n, D]; with `class_weights`, (y, the class row's attention weights [B, H, n]).

        `positions`: each token's index in the full sequence (default 0..n-1; token pruning passes the
        kept ones). `capture`: sow the predictor's full approximate attention and the attention weights
        used (collection INTERMEDIATES), for Sparsifiner's stage-1 distillation; needs the masked path."""
        heads = self.max_heads if heads is None else heads
        if not 0 < heads <= self.max_heads:
            raise ValueError(f"{self.name}: heads={heads}: must be in [1, {self.max_heads}]")
        inner, max_inner = heads * self.head_dim, self.max_heads * self.head_dim

        def projection(name, axes, max_in, max_out):
            return SlimDense(max_in, max_out, axes, "attention", dtype=self.dtype,
                             dot_general_provider=self.dot_general_provider, name=name)

        q, k, v = (projection(name, ("embed", "heads"), self.max_in_features, max_inner)(x, inner)
                   .reshape(x.shape[:-1] + (heads, self.head_dim)).transpose(0, 2, 1, 3)
                   for name in ("query", "key", "value"))
        q = constrain(q, ("activation_batch", "activation_heads", "activation_length", None))
        scale = self.head_dim**-0.5
        static_dense = isinstance(keep_ratio, (int, float)) and keep_ratio >= 1
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), x.shape[:2])
        predictor = None
        if self.sparse:
            predictor = sa.ConnectivityPredictor(
                self.max_heads, self.num_tokens, self.predictor_channels,
                predictor_rank(self.num_tokens, self.predictor_token_reduction), self.predictor_top_coefficients,
                self.predictor_basis_threshold, self.dtype, self.dot_general_provider, name="predictor")
            if self.is_initializing() or capture:
                approx = predictor(q, k, positions, reconstruct=True)
                if capture:
                    self.sow(INTERMEDIATES, "approx_attention", approx)
        dots = tuple(injected_dot_general(self.dot_general_provider) for _ in range(2))  # logits, mixing (AQT)
        if predictor is None or static_dense:
            out, cls_weights, weights = sa.sparse_attention(q, k, v, None, scale, "masked", dot_generals=dots)
            if predictor is not None and distill and self.predictor_distill_weight:
                approx = predictor(jax.lax.stop_gradient(q), jax.lax.stop_gradient(k), positions, reconstruct=True)
                self.sow(AUX_LOSS_COLLECTION, "predictor_distillation",
                         self.predictor_distill_weight * predictor_distillation_loss(approx, weights))
        else:
            scores = self._random_scores(q) if self.mask_scores == "random" else predictor(q, k, positions)
            if path == "gathered":
                kept = (bs.top_key_blocks(scores, keep_ratio, self.block) if self.block
                        else sa.predicted_key_indices(scores, keep_ratio))
                out, cls_weights, weights = sa.sparse_attention(q, k, v, kept, scale,
                                                                "block_sparse" if self.block else "gathered",
                                                                dot_generals=dots, block=self.block)
            else:
                mask = (kept_block_mask(scores, keep_ratio, self.block) if self.block
                        else kept_key_mask(scores, keep_ratio))
                out, weights = sa.attention_with_mask(q, k, v, mask, scale, dot_generals=dots)
                cls_weights = weights[:, :, 0]
        if capture:
            if weights is None:
                raise ValueError(f"{self.name}: capture needs the full attention weights: use the masked path")
            self.sow(INTERMEDIATES, "attention", weights)
        out = out.transpose(0, 2, 1, 3).reshape(x.shape[:-1] + (inner,))
        y = projection("out", ("heads", "embed"), max_inner, self.max_in_features)(out, x.shape[-1])
        return (y, cls_weights) if class_weights else y

    def _random_scores(self, q: jax.Array) -> jax.Array:
        """Uniform scores [B, H, n-1, n] for the random-mask baseline: a fresh draw per step while training
        (the "dropout" stream); at evaluation the "params" key, folded with this module's path so each
        layer differs, makes it deterministic."""
        stream = "dropout" if self.has_rng("dropout") else "params" if self.has_rng("params") else None
        rng = self.make_rng(stream) if stream else jax.random.PRNGKey(0)
        b, h, n, _ = q.shape
        return jax.random.uniform(rng, (b, h, n - 1, n))


class Experts(nn.Module):
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
        full = moe.expert_params(self, e, big_d, m, "expert_mlp")
        w = moe.ExpertWeights(full.wi[:, :d], full.bi, full.wo[:, :, :d], full.bo[:, :d])  # the active token width
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
        moe.sow_router_losses(self, routing, self.balance_weight, self.z_loss_weight)
        capacity = moe.expert_capacity(s, e, k_routed, self.capacity_factor)
        active_capacity = None
        if not static_k and self.capacity_factor > 0:  # the capacity a static top_k would have
            wanted = jnp.ceil(self.capacity_factor * s * jnp.asarray(top_k, jnp.float32) / e)
            active_capacity = jnp.clip(wanted, 1, s).astype(jnp.int32)
        dot_general = resolve_dot_general(self.dot_general_provider, "expert")
        return moe.moe_capacity_path(x.astype(self.dtype), routing, w, capacity, self.dispatch,
                                     (dot_general, dot_general), active_capacity)


class Block(nn.Module):
    """Pre-norm block x + Attention(LN(x)); x + MLP-or-Experts(LN(x)) at the active widths."""

    max_dim: int
    max_heads: int
    max_mlp: int
    sparse: bool = False
    use_moe: bool = False
    attention: Optional[dict] = None  # Attention's predictor fields (sparse blocks)
    experts: Optional[dict] = None  # Experts' fields besides max_in_features (MoE blocks)
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    num_widths: int = 0  # > 0: private LayerNorm affine per menu width (`width_index` picks the row)

    @nn.compact
    def __call__(self, x: jax.Array, heads: Optional[int] = None, mlp: Optional[int] = None,
                 keep_ratio: Scalar = 1.0, top_k: Scalar = 0,
                 max_top_k: int = 0, path: str = "masked", distill: bool = False, active: Optional[jax.Array] = None,
                 width_index: Optional[int] = None, positions: Optional[jax.Array] = None,
                 num_tokens: Optional[int] = None, capture: bool = False, class_weights: bool = False):
        """`active`: only the first `active` channels of `x` are real (zero padding after them); the
        block normalizes over those and keeps the padding at zero. `positions` / `num_tokens`: the tokens'
        indices in, and the length of, the full sequence (after token pruning); `capture` and
        `class_weights` as `Attention`'s (with `class_weights`, returns (x, class-row weights))."""
        keep = None if active is None else (jnp.arange(x.shape[-1]) < active).astype(x.dtype)
        masked = (lambda y: y) if keep is None else (lambda y: y * keep)  # noqa: E731
        norm = lambda name: SlimLayerNorm(self.max_dim, self.dtype, num_widths=self.num_widths, name=name)  # noqa: E731
        attention = Attention(self.max_dim, self.max_heads, self.max_dim // self.max_heads, num_tokens or x.shape[1],
                              self.sparse, dtype=self.dtype, dot_general_provider=self.dot_general_provider,
                              name="attention", **(self.attention or {}))
        y, cls_weights = attention(norm("ln_attention")(x, active, width_index), heads, keep_ratio, path, distill,
                                   positions, capture, class_weights=True)
        x = x + masked(y)
        y = norm("ln_mlp")(x, active, width_index)
        if self.use_moe:
            y = Experts(self.max_dim, dtype=self.dtype, dot_general_provider=self.dot_general_provider, name="moe",
                        **self.experts)(y, top_k, max_top_k)
        else:
            y = SlimMlp(self.max_dim, self.max_mlp, self.dtype, self.dot_general_provider, name="mlp")(y, mlp)
        x = constrain(x + masked(y), ("activation_batch", "activation_length", "activation_embed"))
        return (x, cls_weights) if class_weights else x


class TaskHead(nn.Module):
    """[task decoder blocks on all tokens ->] LN -> Dense(decoder width) -> GELU -> Dense(outputs), per token
    (dense tasks) or on the class token (image-level tasks under `mean_pool`: per token, averaged before the
    output layer)."""

    task: TaskSpec
    max_in: int
    max_decoder: int
    patch_size: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    image_head: str = "class_token"
    num_blocks: int = 0  # task decoder blocks before the head (max heads / MLP width below)
    max_heads: int = 0
    max_mlp: int = 0

    @nn.compact
    def __call__(self, tokens: jax.Array, hidden: int, image_hw: tuple[int, int],
                 active: Optional[jax.Array] = None, block_heads: int = 0, block_mlp: int = 0) -> jax.Array:
        for j in range(self.num_blocks):
            tokens = Block(self.max_in, self.max_heads, self.max_mlp, dtype=self.dtype,
                           dot_general_provider=self.dot_general_provider, name=f"block{j}")(
                tokens, block_heads, block_mlp, active=active)
        pool = not self.task.is_dense and self.image_head == "mean_pool"  # every token, averaged after `hidden`
        x = tokens[:, 1:] if self.task.is_dense else (tokens if pool else tokens[:, 0])
        x = SlimLayerNorm(self.max_in, self.dtype, name="ln")(x, active)
        x = nn.gelu(SlimDense(self.max_in, self.max_decoder, ("embed", "decoder"), "head", dtype=self.dtype,
                              dot_general_provider=self.dot_general_provider, name="hidden")(x, hidden))
        x = x.mean(axis=1) if pool else x
        outputs = self.task.out_channels * (self.patch_size**2 if self.task.is_dense else 1)
        y = SlimDense(self.max_decoder, outputs, ("decoder", "classes"), "head", dtype=self.dtype,
                      dot_general_provider=self.dot_general_provider, name="out")(x)
        if self.task.is_dense:
            y = unpatchify(y, self.patch_size, *image_hw)
            if self.task.kind == "depth":  # the head predicts normalized depth
                y = y[..., 0] * self.task.value_std + self.task.value_mean
        return y.astype(jnp.float32)


class ElasticViT(MultiTaskFields):  # the fields' meanings and defaults: effjax/config/base.py, `model.*`
    width_menu: Sequence[float] = tuple(_MODEL.width_menu)
    image_head: str = _MODEL.image_head
    decoder_blocks: int = _MODEL.decoder_blocks
    private_norms: bool = _MODEL.private_norms
    sparse_layers: tuple[int, ...] = tuple(_MODEL.sparse_layers)
    moe_every: int = _MODEL.moe_every
    num_experts: int = _MODEL.num_experts
    expert_dim: int = _MODEL.expert_dim
    default_top_k: int = _MODEL.top_k
    capacity_factor: float = _MODEL.capacity_factor
    balance_weight: float = _MODEL.balance_weight
    z_loss_weight: float = _MODEL.z_loss_weight
    predictor_channels: int = _MODEL.predictor_channels
    predictor_token_reduction: int = _MODEL.predictor_token_reduction
    predictor_top_coefficients: int = _MODEL.predictor_top_coefficients
    predictor_basis_threshold: float = _MODEL.predictor_basis_threshold
    predictor_distill_weight: float = _MODEL.predictor_distill_weight
    attention_block: int = _MODEL.attention_block
    mask_scores: str = _MODEL.mask_scores
    attention_path: str = _MODEL.attention_path
    token_pruning_layers: tuple[int, ...] = tuple(_MODEL.token_pruning_layers)
    attention_keep_ratio: float = _MODEL.attention_keep_ratio
    token_keep_ratio: float = _MODEL.token_keep_ratio

    def setup(self):
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads}: must divide hidden_dim={self.hidden_dim}")
        check_width_menu(self.width_menu)
        check_image_head(self.image_head)
        check_decoder_blocks(self.decoder_blocks)
        self.embedding = self.make_embedding()
        self.blocks = self.make_blocks()
        self.ln_final = SlimLayerNorm(self.hidden_dim, self.dtype, num_widths=self.norm_widths)
        self.heads = {t.name: TaskHead(t, self.hidden_dim, self.decoder_dim, self.patch_size, self.dtype,
                                       self.dot_general_provider, self.image_head, self.decoder_blocks,
                                       self.num_heads, self.mlp_dim) for t in self.tasks}

    def make_embedding(self) -> nn.Module:
        """The token embedding (`Embedding`); a model of your own overrides this to bring its own stem."""
        return Embedding(self.hidden_dim, self.patch_size, self.dtype, self.dot_general_provider)

    @property
    def moe_blocks(self) -> tuple[int, ...]:
        return moe_block_indices(self.num_layers, self.moe_every) if self.moe_every else ()

    def make_blocks(self) -> list[nn.Module]:
        """The encoder blocks: Sparsifiner attention in `sparse_layers`, a MoE MLP in every `moe_every`-th."""
        for field in ("sparse_layers", "token_pruning_layers"):
            if any(not 0 <= i < self.num_layers for i in getattr(self, field)):
                raise ValueError(f"model.{field}={getattr(self, field)!r}: block indices must be in "
                                 f"[0, {self.num_layers})")
        if self.mask_scores not in MASK_SCORES:
            raise ValueError(f"model.mask_scores={self.mask_scores!r}: allowed: {list(MASK_SCORES)}")
        if self.attention_path not in ATTENTION_PATHS:
            raise ValueError(f"model.attention_path={self.attention_path!r}: allowed: {list(ATTENTION_PATHS)}")
        if self.attention_block:
            bs.check_block(self.attention_block)
        if self.moe_every and not 1 <= self.default_top_k <= self.num_experts:
            raise ValueError(f"model.top_k={self.default_top_k}: must be in [1, model.num_experts={self.num_experts}]")
        attention = {name: getattr(self, name) for name in (
            "predictor_channels", "predictor_token_reduction", "predictor_top_coefficients",
            "predictor_basis_threshold", "predictor_distill_weight", "mask_scores")} | {"block": self.attention_block}
        experts = {name: getattr(self, name) for name in (
            "num_experts", "expert_dim", "capacity_factor", "balance_weight", "z_loss_weight")}
        return [Block(self.hidden_dim, self.num_heads, self.mlp_dim, i in self.sparse_layers, i in self.moe_blocks,
                      attention, experts, self.dtype, self.dot_general_provider, self.norm_widths)
                for i in range(self.num_layers)]

    @property
    def norm_widths(self) -> int:
        """Rows of the encoder LayerNorms' affine parameters: the menu size with private norms, else 0 (shared)."""
        return len(self.width_menu) if self.private_norms else 0

    def width_index(self, encoder_width: float) -> Optional[int]:
        """The private-norm row of an encoder width (None with shared norms)."""
        if not self.private_norms:
            return None
        menu = sorted(float(w) for w in self.width_menu)
        if float(encoder_width) not in menu:
            raise ValueError(f"encoder_width={encoder_width!r}: private norms exist only for the menu widths {menu}")
        return menu.index(float(encoder_width))

    def encode(self, images: jax.Array, encoder_width: float = 1.0, keep_ratio: Scalar = 1.0,
               top_k: Optional[Scalar] = None, max_top_k: Optional[int] = None, path: str = "masked",
               distill: bool = False, token_keep_ratio: float = 1.0, capture: bool = False) -> jax.Array:
        """Encoder output tokens [B, N, d(encoder_width)] after the final LayerNorm, at a width (static)
        and a keep ratio / top-k (static or traced).

        `path`: "masked" (training, traced knobs) or "gathered" (only the kept pairs; static
        keep ratio). `distill`: sow the predictors' distillation loss (full-width dense pass).
        `token_keep_ratio` (static) < 1 prunes tokens after the blocks of `token_pruning_layers`
        (`token_pruning`); `capture` sows each sparse layer's attention (`Attention`).
        """
        heads, hidden, mlp = encoder_widths(self.hidden_dim, self.num_heads, self.mlp_dim, encoder_width)
        top_k = self.default_top_k if top_k is None else top_k
        max_top_k = max_top_k or (top_k if isinstance(top_k, int) else self.num_experts)
        row = self.width_index(encoder_width)
        x = self.embedding(images, hidden)
        num_tokens, positions, full = x.shape[1], None, None
        for i, block in enumerate(self.blocks):
            prune = token_keep_ratio < 1 and i in self.token_pruning_layers
            x = block(x, heads, mlp, keep_ratio, top_k, max_top_k, path, distill, width_index=row, positions=positions,
                      num_tokens=num_tokens, capture=capture, class_weights=prune)
            if prune:
                x, cls_weights = x
                if positions is None:
                    positions = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32), x.shape[:2])
                full = x if full is None else token_pruning.restore_tokens(full, x, positions)
                x, positions = token_pruning.prune_tokens(x, positions, cls_weights,
                                                          kept_token_count(token_keep_ratio, x.shape[1] - 1))
        if full is not None:
            x = token_pruning.restore_tokens(full, x, positions)
        x = self.ln_final(x, None, row)
        self.sow(INTERMEDIATES, "tokens", x)
        return x

    def decode(self, tokens: jax.Array, task: str, width: float, image_hw: tuple[int, int],
               active: Optional[jax.Array] = None) -> jax.Array:
        """Task `task`'s prediction from encoder tokens at decoder width multiplier `width`.

        `active`: when given, only the first `active` channels of `tokens` are real (the
        rest are zero padding), and the head's LayerNorm normalizes over those.
        """
        if task not in self.heads:
            raise ValueError(f"task={task!r}: unknown; tasks: {[t.name for t in self.tasks]}")
        block_heads, _, block_mlp = encoder_widths(self.hidden_dim, self.num_heads, self.mlp_dim, width)
        hidden = decoder_width(self.decoder_dim, width)
        return self.heads[task](tokens, hidden, image_hw, active, block_heads, block_mlp)

    def check_subnet(self, subnet: SubnetConfig) -> None:
        others = subnet.non_default(KNOBS)
        if others:
            raise ValueError(f"the model reads only {list(KNOBS)} at call time (bits are applied to the weights: use "
                             f"subnet.without_bits()); got non-default {others}")
        subnet.check_tasks({t.name for t in self.tasks})
        if subnet.attention_keep_ratio < 1 and not self.sparse_layers:
            raise ValueError(f"SubnetConfig.attention_keep_ratio={subnet.attention_keep_ratio}: the model has no "
                             "Sparsifiner blocks (model.sparse_layers is empty)")
        if subnet.token_keep_ratio < 1 and not self.token_pruning_layers:
            raise ValueError(f"SubnetConfig.token_keep_ratio={subnet.token_keep_ratio}: the model prunes no tokens "
                             "(model.token_pruning_layers is empty)")
        if subnet.moe_top_k and not self.moe_every:
            raise ValueError(f"SubnetConfig.moe_top_k={subnet.moe_top_k}: the model has no MoE blocks "
                             "(model.moe_every=0)")
        if subnet.moe_top_k > self.num_experts:
            raise ValueError(f"SubnetConfig.moe_top_k={subnet.moe_top_k}: must be <= "
                             f"model.num_experts={self.num_experts}")

    def __call__(self, images: jax.Array, train: bool = False, subnet: Optional[SubnetConfig] = None,
                 return_features: bool = False, capture: bool = False):
        """Predictions per task at `subnet` (default: the full network at the model's keep ratios,
        `default_top_k` experts); with `return_features`, also the encoder output tokens.
        Training runs the masked path (unless `attention_path` says otherwise) and sows the predictor
        loss; `capture` sows every sparse layer's attention (Sparsifiner's stage 1)."""
        if subnet is None:
            subnet = SubnetConfig(attention_keep_ratio=self.attention_keep_ratio, token_keep_ratio=self.token_keep_ratio)
        self.check_subnet(subnet)
        path = self.attention_path if self.attention_path != "auto" else ("masked" if train or capture else "gathered")
        if capture and path == "gathered":
            raise ValueError("capture=True needs the full attention weights: use model.attention_path masked or auto")
        tokens = self.encode(images, subnet.encoder_width, subnet.attention_keep_ratio, subnet.moe_top_k or None,
                             path=path, distill=train, token_keep_ratio=subnet.token_keep_ratio, capture=capture)
        hw = images.shape[1:3]
        preds = {t.name: self.decode(tokens, t.name, subnet.decoder_width(t.name), hw) for t in self.tasks}
        return (preds, tokens) if return_features else preds


CONFIG_KEYS = {"default_top_k": "top_k"}  # ElasticViT field -> its `config.model` key, where the names differ
_NOT_CONFIG = ("tasks", "dtype", "dot_general_provider", "parent", "name")


def elastic_fields(model_config, model_class: type = None) -> dict:
    """Every field of `model_class` (default `ElasticViT`; a subclass adds its own) that `config.model` may set:
    the config's value, else the field's default (`effjax/config/base.py`); the builder and the cost model
    (`effjax.compress.cost_elastic`) both read the fields through here, so they cannot disagree.
    """
    read = config_reader(model_config)
    out = {}
    for f in dataclasses.fields(model_class or ElasticViT):
        if f.name in _NOT_CONFIG:
            continue
        value = read(CONFIG_KEYS.get(f.name, f.name), f.default)
        if value is not dataclasses.MISSING:
            out[f.name] = value
    out["width_menu"] = check_width_menu(out["width_menu"])
    out["sparse_layers"] = tuple(int(i) for i in out["sparse_layers"])
    out["token_pruning_layers"] = tuple(int(i) for i in out["token_pruning_layers"])
    out["image_head"] = check_image_head(out["image_head"])
    out["decoder_blocks"] = check_decoder_blocks(out["decoder_blocks"])
    return out


def build(model_config, tasks: Sequence[TaskSpec], dot_general_provider=None,
          model_class: type = None) -> ElasticViT:
    """The registry's builder for every elastic preset (`config.model.name` mt_vit, slim_vit, sparse_vit,
    super_vit), and for a subclass of `ElasticViT` of your own (`model_class`; `effjax.models.register_model`)."""
    model_class = model_class or ElasticViT
    if not (isinstance(model_class, type) and issubclass(model_class, ElasticViT)):
        raise ValueError(f"model {model_config.name}: model_class={model_class!r} is not a subclass of ElasticViT")
    fields = elastic_fields(model_config, model_class)
    shared = vit_fields(model_config, tasks, dot_general_provider)
    study_options = {k: fields[k] for k in ("image_head", "decoder_blocks", "private_norms")
                     if fields[k] != ElasticViT.__dataclass_fields__[k].default}
    if study_options and (fields["sparse_layers"] or fields["moe_every"]):
        raise ValueError(f"model {model_config.name}: {study_options} are slimmable-encoder study options, not "
                         "supported with model.sparse_layers or model.moe_every (the supernet's cost model does not "
                         "price them)")
    return model_class(**shared, **{k: v for k, v in fields.items() if k not in shared})

"""Multi-task ViT with Sparsifiner attention and optional token pruning (Wei et al., CVPR 2023).

The backbone is the elastic model's at full width (`elastic_vit.Embedding`, `TaskHead`;
parameter names as `param_names`: embedding, blocks_<i>/attention/{query,key,value,out},
ln_*, mlp, heads_<task>), so a dense `mt_vit` checkpoint initializes it through
`config.train.init_from`; each attention layer adds a `predictor`
(sparse_attention.ConnectivityPredictor).

Knobs read at call time from the subnet config, so one trained model serves
several of them: `attention_keep_ratio` (rho; 1.0 is dense attention) in the
layers of `sparse_layers`, and `token_keep_ratio` at the blocks of
`token_pruning_layers`: after such a block only the ceil(ratio x patches) patch
tokens the class token attends to most (head-averaged class-row attention, the
EViT / Sparsifiner token score) go on. Dropped tokens keep their last value and
are put back in place before the final LayerNorm, so dense task heads still see
every patch.

`capture=True` sows, per layer, the predictor's full approximate attention and
the attention weights used (collection "intermediates"), for the stage-1
distillation loss; the final tokens are sown there on every call (a no-op unless
the caller makes the collection mutable).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.models import sparse_attention as sa
from effjax.models.elastic_vit import Embedding, TaskHead
from effjax.models.layers import Dense, DotGeneralProvider, LayerNorm, Mlp, constrain, injected_dot_general
from effjax.models.vit import MultiTaskFields, vit_fields
from effjax.subnet import SubnetConfig, kept_token_count, predictor_rank, sparse_model_fields

INTERMEDIATES = "intermediates"
ATTENTION_PATH_CHOICES = ("auto",) + sa.ATTENTION_PATHS  # auto: masked when training, gathered otherwise


class SparseMultiHeadAttention(nn.Module):
    """Multi-head self-attention (the parameter names of `elastic_vit.Attention`) with a connectivity predictor
    whose scores choose each query's keys (or random keys, the baseline), and the class-row weights returned."""

    num_heads: int
    num_tokens: int  # full sequence length the predictor is sized for
    predictor_channels: int
    predictor_token_reduction: int
    predictor_top_coefficients: int
    predictor_basis_threshold: float
    mask_scores: str = "predictor"
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, keep_ratio: float, path: str, capture: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
        """x [B, n, D] -> (y [B, n, D], class-row attention weights [B, H, n])."""
        d_model = x.shape[-1]
        head_dim = d_model // self.num_heads
        dense = lambda name, axes, features: Dense(  # noqa: E731
            features, axes, "attention", dtype=self.dtype, dot_general_provider=self.dot_general_provider, name=name)
        heads_first = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head_dim)).transpose(0, 2, 1, 3)  # noqa: E731
        q = heads_first(dense("query", ("embed", "heads"), d_model)(x))
        k = heads_first(dense("key", ("embed", "heads"), d_model)(x))
        v = heads_first(dense("value", ("embed", "heads"), d_model)(x))
        q = constrain(q, ("activation_batch", "activation_heads", "activation_length", None))
        predictor = sa.ConnectivityPredictor(
            self.num_heads, self.num_tokens, self.predictor_channels,
            predictor_rank(self.num_tokens, self.predictor_token_reduction), self.predictor_top_coefficients,
            self.predictor_basis_threshold, self.dtype, self.dot_general_provider, name="predictor")
        if self.is_initializing() or capture:
            approx = predictor(q, k, positions, reconstruct=True)
            if capture:
                self.sow(INTERMEDIATES, "approx_attention", approx)
        key_indices = None
        if keep_ratio < 1:
            if self.mask_scores == "random":
                # a fresh draw per step while training; at evaluation the fixed "params" key (folded with
                # this module's path, so each layer differs) makes the baseline deterministic
                stream = "dropout" if self.has_rng("dropout") else "params" if self.has_rng("params") else None
                rng = self.make_rng(stream) if stream else jax.random.PRNGKey(0)
                key_indices = sa.random_key_indices(rng, (x.shape[0], self.num_heads, x.shape[1] - 1, x.shape[1]),
                                                    keep_ratio)
            else:
                key_indices = sa.predicted_key_indices(predictor(q, k, positions), keep_ratio)
        dots = tuple(injected_dot_general(self.dot_general_provider) for _ in range(2))  # logits, mixing
        out, cls_weights, weights = sa.sparse_attention(q, k, v, key_indices, head_dim**-0.5, path, dot_generals=dots)
        if capture:
            self.sow(INTERMEDIATES, "attention", weights)
        out = out.transpose(0, 2, 1, 3).reshape(x.shape[:-1] + (d_model,))
        return dense("out", ("heads", "embed"), d_model)(out), cls_weights


class SparseEncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    attention: dict  # SparseMultiHeadAttention fields besides num_heads / dtype / provider
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x, positions, keep_ratio: float, path: str, capture: bool):
        y, cls_weights = SparseMultiHeadAttention(
            self.num_heads, dtype=self.dtype, dot_general_provider=self.dot_general_provider, name="attention",
            **self.attention)(LayerNorm(self.dtype, name="ln_attention")(x), positions, keep_ratio, path, capture)
        x = x + y
        x = x + Mlp(self.mlp_dim, self.dtype, self.dot_general_provider, name="mlp")(LayerNorm(self.dtype, name="ln_mlp")(x))
        return constrain(x, ("activation_batch", "activation_length", "activation_embed")), cls_weights


def prune_tokens(x: jax.Array, positions: jax.Array, cls_weights: jax.Array, keep: int) -> tuple[jax.Array, jax.Array]:
    """Keep the class token and the `keep` patch tokens with the highest head-averaged class attention."""
    importance = cls_weights[:, :, 1:].mean(axis=1)  # [B, n-1]
    chosen = jnp.sort(jax.lax.top_k(jax.lax.stop_gradient(importance), keep)[1], axis=-1)
    patches = jnp.take_along_axis(x[:, 1:], chosen[..., None], axis=1)
    kept_positions = jnp.take_along_axis(positions[:, 1:], chosen, axis=1)
    return (jnp.concatenate([x[:, :1], patches], axis=1),
            jnp.concatenate([positions[:, :1], kept_positions], axis=1))


def restore_tokens(full: jax.Array, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Write the current tokens back into the full sequence at their positions."""
    return full.at[jnp.arange(x.shape[0])[:, None], positions].set(x)


class SparseViT(MultiTaskFields):
    predictor_channels: int = 4  # c: channels of the reduced queries / keys
    predictor_token_reduction: int = 8  # r: token axis N -> N // r for the low-rank map
    predictor_top_coefficients: int = 4  # basis coefficients kept per query row (paper: 8)
    predictor_basis_threshold: float = 0.02  # basis entries below this magnitude are zero in the mask map
    sparse_layers: tuple[int, ...] = ()  # blocks with sparse attention; () is all
    token_pruning_layers: tuple[int, ...] = ()  # blocks after which tokens are pruned
    mask_scores: str = "predictor"  # predictor | random (the random-mask baseline)
    attention_path: str = "auto"  # auto | masked | gathered
    default_subnet: SubnetConfig = SubnetConfig()  # used when the caller passes subnet=None

    def _check(self, subnet: SubnetConfig):
        owned = dataclasses.replace(subnet, attention_keep_ratio=1.0, token_keep_ratio=1.0)
        if owned != SubnetConfig():
            raise ValueError(f"model sparse_vit owns only attention_keep_ratio and token_keep_ratio; got {subnet}")
        if self.mask_scores not in sa.MASK_SCORES:
            raise ValueError(f"model.mask_scores={self.mask_scores!r}: allowed: {list(sa.MASK_SCORES)}")
        if self.attention_path not in ATTENTION_PATH_CHOICES:
            raise ValueError(f"model.attention_path={self.attention_path!r}: allowed: {list(ATTENTION_PATH_CHOICES)}")
        for field in ("sparse_layers", "token_pruning_layers"):
            bad = [i for i in getattr(self, field) if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"model.{field}={getattr(self, field)!r}: block indices must be in [0, {self.num_layers})")

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, subnet: Optional[SubnetConfig] = None,
                 capture: bool = False) -> dict[str, jax.Array]:
        subnet = self.default_subnet if subnet is None else subnet
        self._check(subnet)
        path = self.attention_path if self.attention_path != "auto" else ("masked" if train or capture else "gathered")
        if capture and path == "gathered":
            raise ValueError("capture=True needs the full attention weights: use attention_path masked or auto")
        _, h, w, _ = images.shape
        x = Embedding(self.hidden_dim, self.patch_size, self.dtype, self.dot_general_provider, name="embedding")(
            images, self.hidden_dim)
        full_tokens = x.shape[1]
        positions = jnp.broadcast_to(jnp.arange(full_tokens, dtype=jnp.int32), x.shape[:2])
        full = None
        attention = dict(num_tokens=full_tokens, predictor_channels=self.predictor_channels,
                         predictor_token_reduction=self.predictor_token_reduction,
                         predictor_top_coefficients=self.predictor_top_coefficients,
                         predictor_basis_threshold=self.predictor_basis_threshold, mask_scores=self.mask_scores)
        sparse_layers = set(self.sparse_layers or range(self.num_layers))
        for i in range(self.num_layers):
            keep_ratio = subnet.attention_keep_ratio if i in sparse_layers else 1.0
            x, cls_weights = SparseEncoderBlock(self.num_heads, self.mlp_dim, attention, self.dtype,
                                                self.dot_general_provider, name=f"blocks_{i}")(
                x, positions, keep_ratio, path, capture)
            if i in self.token_pruning_layers and subnet.token_keep_ratio < 1:
                full = x if full is None else restore_tokens(full, x, positions)
                x, positions = prune_tokens(x, positions, cls_weights,
                                            kept_token_count(subnet.token_keep_ratio, x.shape[1] - 1))
        if full is not None:
            x = restore_tokens(full, x, positions)
        x = LayerNorm(self.dtype, name="ln_final")(x)
        self.sow(INTERMEDIATES, "tokens", x)
        return {t.name: TaskHead(t, self.hidden_dim, self.decoder_dim, self.patch_size, self.dtype,
                                 self.dot_general_provider, name=f"heads_{t.name}")(x, self.decoder_dim, (h, w))
                for t in self.tasks}


def build(model_config, tasks, dot_general_provider=None) -> SparseViT:
    """SparseViT from `config.model` (the registry's "sparse_vit" entry)."""
    fields = sparse_model_fields(model_config)
    get = model_config.get
    return SparseViT(
        **vit_fields(model_config, tasks, dot_general_provider),
        predictor_channels=fields["predictor_channels"],
        predictor_token_reduction=fields["predictor_token_reduction"],
        predictor_top_coefficients=fields["predictor_top_coefficients"],
        predictor_basis_threshold=float(get("predictor_basis_threshold", 0.02)),
        sparse_layers=tuple(get("sparse_layers", ())),
        token_pruning_layers=fields["token_pruning_layers"],
        mask_scores=fields["mask_scores"],
        attention_path=str(get("attention_path", "auto")),
        default_subnet=SubnetConfig(attention_keep_ratio=float(get("attention_keep_ratio", 1.0)),
                                    token_keep_ratio=float(get("token_keep_ratio", 1.0))),
    )

"""Sparsifiner attention (Wei et al., CVPR 2023): connectivity predictor and two sparse paths.

Per layer and head, the *connectivity predictor* (Sec. 3.2 of the paper) guesses
which keys each query needs, cheaply:

  q~ = q W_q, k~ = k W_k                      channel reduction d_h -> c (shared by the heads)
  k_low = P^T k~                               learned low-rank projection of the token axis, N -> M
  C = softmax(q~ k_low^T / sqrt(num_heads))    basis coefficients, one row per query
  A~ = C B                                     approximate attention map over N keys (B: M x N basis)

For the mask (inference and fine-tuning) the coefficients keep their top
`basis_coefficients` entries per row and the basis is thresholded at
`basis_threshold`, so A~ costs (N-1) x top x N multiply-adds per head; for the
stage-1 distillation loss the full product C B is used. The binary connectivity
mask keeps the top ceil(rho N) keys of each query row of A~ (the class-token row
stays dense) and carries no gradient.

Three attention paths share one interface, `sparse_attention(..., path=)`:
`"masked"` computes all N x N logits and sets the dropped ones to a large
negative value before the softmax (training, any N); `"gathered"` gathers the
kept keys and values per query and computes only those k logits, O(N k d) work
(inference). Both return the same outputs. `"block_sparse"` takes a selection of
whole key blocks per query block instead (the predictor's scores coarsened by
`block_sparse.top_key_blocks`) and computes it as dense block matmuls, or on
GPU / TPU with plain float einsums and shapes it supports, in the Pallas kernel
`effjax.models.block_sparse_kernel` (its backward is the XLA path's; inside a
mesh it runs under `shard_map`, each device on its share of examples and heads); under
`block_sparse.block_connectivity_mask` of that selection the masked path gives
the same outputs. Arrays are head-major: [B, H, N, d].

Quantization: every attention function takes `dot_generals=(logits, mix)`, the
injected dot_generals of its two activation x activation einsums (one per einsum,
from `layers.injected_dot_general(provider)`, group "attention_scores"); None
(the default) is the plain `jnp.einsum`, unchanged. Quantized, the masked and
gathered paths compute the same integer logits on the kept pairs (per-token
scales over the head channels), but the mixing einsum scales the values per
channel over the keys it contracts (all N in the masked path, the kept k in the
gathered one), so their outputs then differ by quantization noise, not exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from effjax.models import block_sparse_kernel
from effjax.models import block_sparse
from effjax.models.layers import Dense, DotGeneralProvider, einsum, mesh_axes
from effjax.subnet import kept_key_count

NO_DOT_GENERALS = (None, None)  # (logits, mix): plain jnp.einsum

ATTENTION_PATHS = ("masked", "gathered")  # paths over token-level kept keys [B, H, N-1, k]
BLOCK_PATHS = ("block_sparse",)  # paths over kept key blocks [B, H, nq, kb]


def _softmax_f32(logits: jax.Array, dtype) -> jax.Array:
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, *, dot_generals=NO_DOT_GENERALS
                    ) -> tuple[jax.Array, jax.Array]:
    """Plain softmax attention: (outputs [B, H, N, d], weights [B, H, N, N])."""
    logits_dot, mix_dot = dot_generals
    weights = _softmax_f32(_with_keys("bhqd,bhkd->bhqk", q, k, logits_dot) * scale, q.dtype)
    return _with_keys("bhqk,bhkd->bhqd", weights, v, mix_dot), weights


def _with_keys(subscripts: str, lhs: jax.Array, keys: jax.Array, dot_general) -> jax.Array:
    """`einsum(subscripts, lhs, keys)` with per-head keys or values [B, H, N, d] ("bhkd"): the logits q k^T or
    the mixing weights v. Under an injected (quantizing) dot_general the keys enter token-major ("bkhd"):
    XLA's CPU backend rejects an int4 batched dot (qwix) whose operands both lead with the two batch axes.
    The float path keeps the heads-first layout (and XLA's reduction order with it)."""
    if dot_general is None:
        return einsum(subscripts, lhs, keys)
    return einsum(subscripts.replace("bhkd", "bkhd"), lhs, keys.transpose(0, 2, 1, 3), dot_general)


def top_key_indices(scores: jax.Array, num_keys: int) -> jax.Array:
    """Indices of the `num_keys` highest scores of each row (no gradient): [..., num_keys] int32."""
    return jax.lax.top_k(jax.lax.stop_gradient(scores), num_keys)[1].astype(jnp.int32)


def connectivity_mask(key_indices: jax.Array, num_tokens: int) -> jax.Array:
    """Boolean mask [B, H, N, N] from the kept keys of rows 1..N-1; row 0 (class token) is all kept."""
    b, h = key_indices.shape[:2]
    rows = jnp.zeros((b, h, num_tokens - 1, num_tokens), bool)
    rows = jnp.put_along_axis(rows, key_indices, True, axis=-1, inplace=False)
    return jnp.concatenate([jnp.ones((b, h, 1, num_tokens), bool), rows], axis=2)


def attention_with_mask(q, k, v, mask: jax.Array, scale: float, *, dot_generals=NO_DOT_GENERALS
                        ) -> tuple[jax.Array, jax.Array]:
    """Softmax attention over the True entries of `mask` [B, H, N, N].

    A row with no kept key would be a softmax of nothing; its weights are zero
    (not NaN), so its output is zero.
    """
    logits_dot, mix_dot = dot_generals
    logits = _with_keys("bhqd,bhkd->bhqk", q, k, logits_dot).astype(jnp.float32) * scale
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(mask & mask.any(-1, keepdims=True), weights, 0.0).astype(q.dtype)
    return _with_keys("bhqk,bhkd->bhqd", weights, v, mix_dot), weights


def _gather_rows(x: jax.Array, key_indices: jax.Array) -> jax.Array:
    """x [B, H, N, d] at key_indices [B, H, R, k] -> [B, H, R, k, d]."""
    b, h, r, kk = key_indices.shape
    flat = jnp.take_along_axis(x, key_indices.reshape(b, h, r * kk, 1), axis=2)
    return flat.reshape(b, h, r, kk, x.shape[-1])


def _attend_gathered(q_rows, k, v, key_indices, scale, dot_generals=NO_DOT_GENERALS):
    logits_dot, mix_dot = dot_generals
    keys, values = _gather_rows(k, key_indices), _gather_rows(v, key_indices)
    weights = _softmax_f32(einsum("bhqd,bhqkd->bhqk", q_rows, keys, logits_dot) * scale, q_rows.dtype)
    return einsum("bhqk,bhqkd->bhqd", weights, values, mix_dot)


def gathered_attention(q, k, v, key_indices: jax.Array, scale: float, query_block: Optional[int] = None, *,
                       dot_generals=NO_DOT_GENERALS) -> tuple[jax.Array, jax.Array]:
    """Only the kept pairs: the class-token row attends densely (O(N d)), every other row
    attends to its k gathered keys (O(k d)). Returns (outputs, class-row weights [B, H, N]).

    The gathered keys and values take N k d memory; `query_block` bounds that to
    query_block x k x d by processing the query rows in blocks (lax.map).
    """
    cls_out, cls_weights = dense_attention(q[:, :, :1], k, v, scale, dot_generals=dot_generals)
    q_rows, rows = q[:, :, 1:], q.shape[2] - 1
    if query_block is None or rows <= query_block:
        rows_out = _attend_gathered(q_rows, k, v, key_indices, scale, dot_generals)
    else:
        if tuple(dot_generals) != NO_DOT_GENERALS:
            # injected dot_generals may be Flax modules, which cannot run inside lax.map
            raise ValueError("gathered_attention: query_block needs plain einsums; got injected dot_generals")
        out = jax.lax.map(lambda blk: _attend_gathered(blk[0], k, v, blk[1], scale),
                          (block_sparse.by_step(q_rows, query_block), block_sparse.by_step(key_indices, query_block)))
        rows_out = block_sparse.from_steps(out, rows)
    return jnp.concatenate([cls_out, rows_out], axis=2), cls_weights[:, :, 0]


def uses_block_sparse_kernel(q: jax.Array, block_indices: jax.Array, block: int, dot_generals=NO_DOT_GENERALS,
                             platform: Optional[str] = None) -> bool:
    """Whether the "block_sparse" path runs the Pallas kernel on `platform` (default: the running backend):
    an accelerator, plain float einsums (a quantizing dot_general keeps the XLA path) and supported shapes."""
    return (block_sparse_kernel.backend_path(platform) == "pallas" and tuple(dot_generals) == NO_DOT_GENERALS
            and block_sparse_kernel.kernel_supports(q.shape, block_indices.shape[-1], block, q.dtype, platform))


def kernel_shard_spec(shape: tuple[int, ...]) -> Optional[PartitionSpec]:
    """The split of [B, H, ...] arrays over the mesh in context (batch over the `activation_batch` axes, heads
    over the `activation_heads` axes, each only where it divides evenly), or None outside a mesh or when nothing
    is split. The kernel is an opaque custom call to GSPMD, which would gather its operands onto every device;
    attention is independent per example and head, so under `shard_map` each device runs it on its own share."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None

    def split(logical: str, size: int, taken: tuple[str, ...] = ()) -> tuple[str, ...]:
        axes = tuple(a for a in mesh_axes(logical) if a not in taken)
        return axes if axes and size % math.prod(mesh.shape[a] for a in axes) == 0 else ()

    batch_axes = split("activation_batch", shape[0])
    head_axes = split("activation_heads", shape[1], batch_axes)
    if math.prod(mesh.shape[a] for a in batch_axes + head_axes) == 1:
        return None
    return PartitionSpec(batch_axes or None, head_axes or None)


def block_sparse_attention_by_backend(q, k, v, block_indices: jax.Array, scale: float, block: int, *,
                                      dot_generals=NO_DOT_GENERALS, platform: Optional[str] = None
                                      ) -> tuple[jax.Array, jax.Array]:
    """(outputs, class-row weights) of the block selection, in the kernel where `uses_block_sparse_kernel`,
    else on the XLA path; a `platform` other than the running one runs the kernel interpreted (tests)."""
    if uses_block_sparse_kernel(q, block_indices, block, dot_generals, platform):
        run = functools.partial(block_sparse_kernel.block_sparse_attention_trainable, scale=scale, block=block,
                                platform=platform, interpret=block_sparse_kernel.interpreted_here(platform))
        spec = kernel_shard_spec(q.shape)
        if spec is None:
            return run(q, k, v, block_indices)
        return jax.shard_map(run, in_specs=(spec,) * 4, out_specs=(spec, spec), check_vma=False)(
            q, k, v, block_indices)
    return block_sparse.block_sparse_attention(q, k, v, block_indices, scale, block, dot_generals=dot_generals)


def sparse_attention(q, k, v, key_indices: Optional[jax.Array], scale: float, path: str, *,
                     dot_generals=NO_DOT_GENERALS, block: int = 0, platform: Optional[str] = None
                     ) -> tuple[jax.Array, jax.Array, Optional[jax.Array]]:
    """One interface for every path: (outputs [B, H, N, d], class-row weights [B, H, N], full weights or None).

    `key_indices` None means dense attention; otherwise it holds the kept keys of
    query rows 1..N-1, [B, H, N-1, k] for "masked" and "gathered", or for
    "block_sparse" the kept key blocks of each query block, [B, H, nq, kb], with
    `block` the block size; `platform` overrides the backend that chooses its
    implementation (`block_sparse_attention_by_backend`).
    """
    if path not in ATTENTION_PATHS + BLOCK_PATHS:
        raise ValueError(f"path={path!r}: allowed: {list(ATTENTION_PATHS + BLOCK_PATHS)}")
    if key_indices is None:
        out, weights = dense_attention(q, k, v, scale, dot_generals=dot_generals)
        return out, weights[:, :, 0], weights
    if path == "masked":  # dense logits with the dropped (query, key) pairs masked out
        out, weights = attention_with_mask(q, k, v, connectivity_mask(key_indices, q.shape[2]), scale,
                                           dot_generals=dot_generals)
        return out, weights[:, :, 0], weights
    if path == "block_sparse":
        out, cls_weights = block_sparse_attention_by_backend(q, k, v, key_indices, scale, block,
                                                             dot_generals=dot_generals, platform=platform)
        return out, cls_weights, None
    out, cls_weights = gathered_attention(q, k, v, key_indices, scale, dot_generals=dot_generals)
    return out, cls_weights, None


def _kept_apart(q_red: jax.Array, k_low: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The predictor's reductions behind an optimization barrier, lowered for TPU only: libtpu 0.0.42.1 fuses them
    with the coefficient dot into one nested convolution fusion and segfaults emitting it (4 examples per chip,
    under a width switch with sharded parameters; reproducer: experiments/libtpu_crash). On CPU the barrier costs
    ~6 CPU-s per quickstart job."""
    return jax.lax.optimization_barrier((q_red, k_low))


class ConnectivityPredictor(nn.Module):
    """Approximate attention of query rows 1..N-1 over the N current tokens (see the module docstring).

    `num_tokens` is the full token count (patches + class token) the token-axis
    projection and the basis are sized for; after token pruning the current tokens
    select their rows / columns by `positions` (their indices in the full sequence).
    """

    num_heads: int
    num_tokens: int
    reduced_channels: int
    token_rank: int
    basis_coefficients: int
    basis_threshold: float
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, q: jax.Array, k: jax.Array, positions: jax.Array, reconstruct: bool = False) -> jax.Array:
        """q, k: [B, H, n, d]; positions: [B, n] int. Returns A~ [B, H, n-1, n]; `reconstruct`
        gives the full C B product used by the distillation loss instead of the sparse one."""
        reduce = lambda name: Dense(self.reduced_channels, ("kv", None), "attention", dtype=self.dtype,  # noqa: E731
                                    dot_general_provider=self.dot_general_provider, name=name)
        q_red, k_red = reduce("query_reduce")(q[:, :, 1:]), reduce("key_reduce")(k)
        token_down = self.param("token_down", nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02),
                                                                           ("position", None)),
                                (self.num_tokens, self.token_rank), jnp.float32)
        basis = self.param("basis", nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02),
                                                                 (None, "position")),
                           (self.token_rank, self.num_tokens), jnp.float32)
        down_rows = token_down.astype(self.dtype)[positions]  # [B, n, M]
        basis_cols = jnp.swapaxes(basis.astype(self.dtype)[:, positions], 0, 1)  # [B, M, n]
        k_low = jnp.einsum("bhnc,bnm->bhmc", k_red, down_rows)
        q_red, k_low = jax.lax.platform_dependent(q_red, k_low, tpu=_kept_apart, default=lambda q, k: (q, k))
        coefficients = _softmax_f32(jnp.einsum("bhqc,bhmc->bhqm", q_red, k_low) * self.num_heads**-0.5, self.dtype)
        if reconstruct:
            return jnp.einsum("bhqm,bmn->bhqn", coefficients, basis_cols)
        basis_cols = jnp.where(jnp.abs(basis_cols) > self.basis_threshold, basis_cols, 0.0)
        top = min(self.basis_coefficients, self.token_rank)
        top_values, top_rows = jax.lax.top_k(coefficients, top)  # [B, H, n-1, top]
        chosen = jax.vmap(lambda cols, rows: cols[rows])(basis_cols, top_rows)  # [B, H, n-1, top, n]
        return jnp.einsum("bhqj,bhqjn->bhqn", top_values, chosen)


def predicted_key_indices(approx_attention: jax.Array, keep_ratio: float) -> jax.Array:
    """Top ceil(rho n) keys of each row of the approximate attention [B, H, n-1, n]."""
    n = approx_attention.shape[-1]
    return top_key_indices(approx_attention, kept_key_count(keep_ratio, n))


def random_key_indices(rng: jax.Array, shape: tuple[int, ...], keep_ratio: float) -> jax.Array:
    """The random-mask baseline: top ceil(rho n) of uniform random scores, shape [B, H, n-1, n]."""
    return top_key_indices(jax.random.uniform(rng, shape), kept_key_count(keep_ratio, shape[-1]))

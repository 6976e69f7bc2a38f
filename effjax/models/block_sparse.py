"""Block-sparse attention: the connectivity predictor's mask coarsened to key blocks, computed as dense block matmuls.

Sparsifiner (Wei et al., CVPR 2023) keeps the top ceil(rho N) keys of every query
row; gathering k keys per query is O(N k d) work but irregular, so on real hardware
it is slower than dense attention. Block sparsity (as in BigBird, Zaheer et al.,
NeurIPS 2020, and the block masks of FlashAttention / splash attention) keeps the
predictor but coarsens its scores:

  query rows 1..N-1 and keys 0..N-1 are cut into blocks of b (the last ones padded);
  S[I, J] = mean of the approximate attention A~ over query block I x key block J;
  query block I keeps the top  kb = ceil(rho N / b)  key blocks J of S[I, :].

The class-token row (row 0) stays dense, as in the token-level mask. Attention then
gathers, per query block, its kb whole key and value blocks (contiguous rows, one
copy each) and computes the b x (kb b) logits, softmax and mixing as dense batched
matmuls: the same O(N rho N d) work as the token-level path, in regular tiles. With plain
einsums, large gathers go through loops over the query blocks, `QUERY_BLOCKS_PER_STEP` at a
time: the forward where one call's gathered keys pass `LOOP_ABOVE_BYTES`, instead of one gather
of all nq * kb blocks, and its backward then recomputes each step rather than storing every
step's gathered blocks and logits. For the small blocks of `RECOMPUTED_BLOCK_SIZES`, past
`BACKWARD_LOOP_ABOVE_BYTES`, the backward instead loops on its own, keeping only each row's
log-sum-exp from the forward and recomputing a step's probabilities from it, as
FlashAttention-2's backward does (Dao, 2023, Alg. 2). Each is faster on CPU where it is used and
slower elsewhere (thresholds from CPU timings: BENCHMARKS.md); the results agree to float rounding.
Padded keys (N not a multiple of b) are masked out; padded query rows are dropped.

`block_connectivity_mask` expands a block selection to the token mask [B, H, N, N]
under which `sparse_attention.attention_with_mask` (the training path) gives the
same outputs. Arrays are head-major: [B, H, N, d].
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from effjax.models.layers import einsum

BLOCK_SIZES = (16, 32, 64, 128)
NO_DOT_GENERALS = (None, None)  # (logits, mix): plain jnp.einsum
QUERY_BLOCKS_PER_STEP = 4  # query blocks whose key/value blocks are gathered and multiplied in one loop step
LOOP_ABOVE_BYTES = 24 << 20  # gathered keys of one call above this: the forward loops over the query blocks
RECOMPUTED_BLOCK_SIZES = (16, 32)  # block sizes whose backward may recompute probabilities from the log-sum-exp
BACKWARD_LOOP_ABOVE_BYTES = 6 << 20  # ... when one call's gathered keys pass this (CPU timings)


def check_block(block: int) -> None:
    if block not in BLOCK_SIZES:
        raise ValueError(f"block={block!r}: allowed: {list(BLOCK_SIZES)}")


def block_counts(num_tokens: int, block: int) -> tuple[int, int]:
    """(query blocks over rows 1..N-1, key blocks over keys 0..N-1)."""
    return -(-(num_tokens - 1) // block), -(-num_tokens // block)


def checked_block_counts(q: jax.Array, block_indices: jax.Array, block: int) -> tuple[int, int]:
    """`block_counts` of q [B, H, N, d], refusing a block size or a selection [B, H, nq, kb] that does not fit."""
    check_block(block)
    b, h, n, _ = q.shape
    nq, nk = block_counts(n, block)
    if block_indices.shape[:3] != (b, h, nq):
        raise ValueError(f"block_indices shape {block_indices.shape}: expected ({b}, {h}, {nq}, kb) "
                         f"for {n} tokens in blocks of {block}")
    return nq, nk


def kept_block_count(keep_ratio: float, num_tokens: int, block: int) -> int:
    """kb = ceil(rho N / b) key blocks per query block, at least 1 and at most the number of key blocks."""
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio={keep_ratio!r}: must be in (0, 1]")
    return max(1, min(block_counts(num_tokens, block)[1], math.ceil(keep_ratio * num_tokens / block - 1e-9)))


def coarsen_scores(scores: jax.Array, block: int) -> jax.Array:
    """Approximate attention of rows 1..N-1, [B, H, N-1, N] -> block means [B, H, nq, nk] (float32, no gradient).

    Padding does not enter the means: each block is averaged over its real entries.
    """
    b, h, rows, n = scores.shape
    nq, nk = block_counts(n, block)
    s = jnp.pad(jax.lax.stop_gradient(scores).astype(jnp.float32),
                ((0, 0), (0, 0), (0, nq * block - rows), (0, nk * block - n)))
    sums = s.reshape(b, h, nq, block, nk, block).sum((3, 5))
    row_count = np.minimum(block, rows - block * np.arange(nq))
    col_count = np.minimum(block, n - block * np.arange(nk))
    return sums / jnp.asarray(np.outer(row_count, col_count), jnp.float32)


def top_key_blocks(scores: jax.Array, keep_ratio: float, block: int) -> jax.Array:
    """Key blocks kept by each query block: the top kb block means, [B, H, nq, kb] int32, best first."""
    check_block(block)
    kb = kept_block_count(keep_ratio, scores.shape[-1], block)
    return jax.lax.top_k(coarsen_scores(scores, block), kb)[1].astype(jnp.int32)


def random_key_blocks(rng: jax.Array, batch_heads: tuple[int, int], num_tokens: int, keep_ratio: float,
                      block: int) -> jax.Array:
    """The random-mask baseline at block level: kb distinct random key blocks per query block."""
    check_block(block)
    nq, nk = block_counts(num_tokens, block)
    kb = kept_block_count(keep_ratio, num_tokens, block)
    return jax.lax.top_k(jax.random.uniform(rng, (*batch_heads, nq, nk)), kb)[1].astype(jnp.int32)


def block_connectivity_mask(block_indices: jax.Array, num_tokens: int, block: int) -> jax.Array:
    """Token mask [B, H, N, N] of a block selection [B, H, nq, kb]; row 0 (class token) is all kept."""
    nk = block_counts(num_tokens, block)[1]
    return chosen_blocks_mask(jax.nn.one_hot(block_indices, nk, dtype=jnp.int32).sum(-2) > 0, num_tokens, block)


def chosen_blocks_mask(chosen: jax.Array, num_tokens: int, block: int) -> jax.Array:
    """Token mask [B, H, N, N] of the chosen (query block, key block) pairs [B, H, nq, nk] (bool); row 0 (class
    token) is all kept."""
    b, h = chosen.shape[:2]
    rows = chosen[:, :, np.arange(num_tokens - 1) // block][:, :, :, np.arange(num_tokens) // block]
    return jnp.concatenate([jnp.ones((b, h, 1, num_tokens), bool), rows], axis=2)


def pad_blocks(x: jax.Array, blocks: int, block: int) -> jax.Array:
    """[B, H, n, d] -> [B, H, blocks, block, d], zero rows appended."""
    b, h, n, d = x.shape
    return jnp.pad(x, ((0, 0), (0, 0), (0, blocks * block - n), (0, 0))).reshape(b, h, blocks, block, d)


def _gather(blocks: jax.Array, indices: jax.Array, block: int) -> jax.Array:
    """Key (or value) blocks [B, H, nk, block, d] picked by [B, H, c, kb] -> [B, H, c, kb * block, d]."""
    b, h, c, kb = indices.shape
    picked = jnp.take_along_axis(blocks, indices.reshape(b, h, c * kb, 1, 1), axis=2)
    return picked.reshape(b, h, c, kb * block, blocks.shape[-1])


def _scatter_add(total: jax.Array, indices: jax.Array, gathered: jax.Array) -> jax.Array:
    """Adds gathered blocks [B, H, c, kb * block, d] back onto the blocks [B, H, nk, block, d] they came from."""
    b, h, c, kb = indices.shape
    rows = gathered.reshape(b, h, c * kb, *total.shape[3:])
    return total.at[jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None], indices.reshape(b, h, -1)].add(rows)


def _logits(queries, keys, indices, num_tokens: int, block: int, logits_dot=None) -> jax.Array:
    """Float32 logits [B, H, c, block, kb * block] of query blocks against their gathered keys, padding at -max."""
    b, h, c, kb = indices.shape
    logits = einsum("bhqid,bhqjd->bhqij", queries, keys, logits_dot).astype(jnp.float32)
    if num_tokens % block:
        key_pos = (indices[..., None] * block + jnp.arange(block)).reshape(b, h, c, 1, kb * block)
        logits = jnp.where(key_pos < num_tokens, logits, jnp.finfo(jnp.float32).min)
    return logits


def _attend(queries, indices, k_blocks, v_blocks, num_tokens: int, block: int, dot_generals=NO_DOT_GENERALS):
    """Outputs [B, H, c, block, d] of scaled query blocks [B, H, c, block, d] over their key blocks [B, H, c, kb],
    and each row's log-sum-exp of its logits [B, H, c, block] (float32)."""
    logits_dot, mix_dot = dot_generals
    logits = _logits(queries, _gather(k_blocks, indices, block), indices, num_tokens, block, logits_dot)
    top = jax.lax.stop_gradient(logits.max(-1, keepdims=True))
    unnormalized = jnp.exp(logits - top)
    total = unnormalized.sum(-1, keepdims=True)
    # softmax with its normalization deferred past the mixing matmul: one division per output, not per logit
    out = einsum("bhqij,bhqjd->bhqid", unnormalized.astype(queries.dtype), _gather(v_blocks, indices, block), mix_dot)
    return out / total.astype(queries.dtype), (top + jnp.log(total))[..., 0]


def _gathered_bytes(indices: jax.Array, k_blocks: jax.Array) -> int:
    """Bytes of the keys one gather of every query block's kept blocks [B, H, nq, kb] would copy."""
    return math.prod(indices.shape) * math.prod(k_blocks.shape[3:]) * k_blocks.dtype.itemsize


def by_step(x: jax.Array, per_step: int = QUERY_BLOCKS_PER_STEP) -> jax.Array:
    """[B, H, nq, ...] -> [steps, B, H, per_step, ...], axis 2 zero-padded: the inputs of a loop over axis 2."""
    b, h, nq = x.shape[:3]
    steps = -(-nq // per_step)
    padded = jnp.pad(x, ((0, 0), (0, 0), (0, steps * per_step - nq)) + ((0, 0),) * (x.ndim - 3))
    return jnp.moveaxis(padded.reshape(b, h, steps, per_step, *x.shape[3:]), 2, 0)


def from_steps(x: jax.Array, nq: int) -> jax.Array:
    """Inverse of `by_step`: [steps, B, H, c, ...] -> [B, H, nq, ...]."""
    x = jnp.moveaxis(x, 0, 2)
    return x.reshape(*x.shape[:2], -1, *x.shape[4:])[:, :, :nq]


def _forward_rows(queries, indices, k_blocks, v_blocks, num_tokens: int, block: int, remat: bool = False):
    """`_attend` over all query blocks: one gather, or a loop over the query blocks past `LOOP_ABOVE_BYTES`
    (`remat`: JAX's backward of the loop recomputes each step instead of storing its gathers and logits)."""
    if _gathered_bytes(indices, k_blocks) <= LOOP_ABOVE_BYTES:
        return _attend(queries, indices, k_blocks, v_blocks, num_tokens, block)
    step = lambda a: _attend(*a, k_blocks, v_blocks, num_tokens, block)  # noqa: E731
    out, lse = jax.lax.map(jax.checkpoint(step) if remat else step, (by_step(queries), by_step(indices)))
    return from_steps(out, indices.shape[2]), from_steps(lse, indices.shape[2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _recomputed_rows(queries, indices, k_blocks, v_blocks, num_tokens: int, block: int) -> jax.Array:
    """`_attend`'s outputs whose backward loops over the query blocks, recomputing each step's probabilities
    from the saved log-sum-exp (FlashAttention-2's backward, Dao 2023, Alg. 2) instead of storing them."""
    return _forward_rows(queries, indices, k_blocks, v_blocks, num_tokens, block)[0]


def _recomputed_rows_fwd(queries, indices, k_blocks, v_blocks, num_tokens, block):
    out, lse = _forward_rows(queries, indices, k_blocks, v_blocks, num_tokens, block)
    return out, (queries, indices, k_blocks, v_blocks, out, lse)


def _recomputed_rows_bwd(num_tokens, block, residuals, d_out):
    queries, indices, k_blocks, v_blocks, out, lse = residuals

    def step(totals, a):
        q, idx, d_o, o, row_lse = a
        keys, values = _gather(k_blocks, idx, block), _gather(v_blocks, idx, block)
        probs = jnp.exp(_logits(q, keys, idx, num_tokens, block) - row_lse[..., None])
        d_values = jnp.einsum("bhqij,bhqid->bhqjd", probs.astype(d_o.dtype), d_o)
        d_probs = jnp.einsum("bhqid,bhqjd->bhqij", d_o, values).astype(jnp.float32)
        row_dot = (d_o.astype(jnp.float32) * o.astype(jnp.float32)).sum(-1, keepdims=True)
        d_logits = (probs * (d_probs - row_dot)).astype(q.dtype)
        d_q = jnp.einsum("bhqij,bhqjd->bhqid", d_logits, keys)
        d_keys = jnp.einsum("bhqij,bhqid->bhqjd", d_logits, q)
        return (_scatter_add(totals[0], idx, d_keys), _scatter_add(totals[1], idx, d_values)), d_q

    (d_k, d_v), d_q = jax.lax.scan(step, (jnp.zeros_like(k_blocks), jnp.zeros_like(v_blocks)),
                                   tuple(map(by_step, (queries, indices, d_out, out, lse))))
    return from_steps(d_q, queries.shape[2]), None, d_k, d_v


_recomputed_rows.defvjp(_recomputed_rows_fwd, _recomputed_rows_bwd)


def block_sparse_attention(q: jax.Array, k: jax.Array, v: jax.Array, block_indices: jax.Array, scale: float,
                           block: int, *, dot_generals=NO_DOT_GENERALS) -> tuple[jax.Array, jax.Array]:
    """Outputs [B, H, N, d] and class-row weights [B, H, N] under the block selection [B, H, nq, kb].

    The key blocks of one query block must be distinct (as `top_key_blocks` gives them).
    """
    b, h, n, d = q.shape
    nq, nk = checked_block_counts(q, block_indices, block)
    logits_dot, mix_dot = dot_generals

    cls_logits = einsum("bhqd,bhkd->bhqk", q[:, :, :1], k, logits_dot).astype(jnp.float32) * scale
    cls_weights = jax.nn.softmax(cls_logits, axis=-1).astype(q.dtype)
    cls_out = einsum("bhqk,bhkd->bhqd", cls_weights, v, mix_dot)

    k_blocks, v_blocks = pad_blocks(k, nk, block), pad_blocks(v, nk, block)
    queries = pad_blocks(q[:, :, 1:], nq, block) * jnp.asarray(scale, q.dtype)
    if dot_generals != NO_DOT_GENERALS or nq <= QUERY_BLOCKS_PER_STEP:  # AQT and qwix dot_generals are modules,
        rows_out = _attend(queries, block_indices, k_blocks, v_blocks, n, block, dot_generals)[0]  # kept out of loops
    elif block in RECOMPUTED_BLOCK_SIZES and _gathered_bytes(block_indices, k_blocks) > BACKWARD_LOOP_ABOVE_BYTES:
        rows_out = _recomputed_rows(queries, block_indices, k_blocks, v_blocks, n, block)
    else:
        rows_out = _forward_rows(queries, block_indices, k_blocks, v_blocks, n, block, remat=True)[0]
    rows_out = rows_out.reshape(b, h, -1, d)
    return jnp.concatenate([cls_out, rows_out[:, :, :n - 1]], axis=2), cls_weights[:, :, 0]


def block_sparse_flops(num_tokens: int, head_dim: int, heads: int, keep_ratio: float, block: int) -> dict:
    """Logit + mixing multiply-adds (x2) and softmax entries of the block path and of dense attention, per example.

    The block path counts what it computes: its padded query rows times kb whole key
    blocks, plus the dense class row.
    """
    nq, _ = block_counts(num_tokens, block)
    kb = kept_block_count(keep_ratio, num_tokens, block)
    pairs = nq * block * kb * block + num_tokens
    dense_pairs = num_tokens * num_tokens
    return {"block_pairs": heads * pairs, "dense_pairs": heads * dense_pairs,
            "block_flops": heads * pairs * 4 * head_dim, "dense_flops": heads * dense_pairs * 4 * head_dim,
            "kept_blocks": kb}

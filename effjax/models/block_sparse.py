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
matmuls: the same O(N rho N d) work as the token-level path, in regular tiles. Where the
gathered keys of one call pass `LOOP_ABOVE_BYTES` (and the einsums are plain), the query blocks
go through a loop, `QUERY_BLOCKS_PER_STEP` at a time, instead of one gather of all nq * kb
blocks, and the backward pass recomputes each step rather than storing every step's gathered
blocks and logits (faster on CPU for large gathers, slower for small ones: BENCHMARKS.md); the
outputs agree to float rounding.
Padded keys (N not a multiple of b) are masked out; padded query rows are dropped.

`block_connectivity_mask` expands a block selection to the token mask [B, H, N, N]
under which `sparse_attention.attention_with_mask` (the training path) gives the
same outputs. Arrays are head-major: [B, H, N, d].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from effjax.models.layers import einsum

BLOCK_SIZES = (16, 32, 64, 128)
NO_DOT_GENERALS = (None, None)  # (logits, mix): plain jnp.einsum
QUERY_BLOCKS_PER_STEP = 4  # query blocks whose key/value blocks are gathered and multiplied in one loop step
LOOP_ABOVE_BYTES = 24 << 20  # gathered keys of one call above this: loop over the query blocks (CPU timings)


def check_block(block: int) -> None:
    if block not in BLOCK_SIZES:
        raise ValueError(f"block={block!r}: allowed: {list(BLOCK_SIZES)}")


def block_counts(num_tokens: int, block: int) -> tuple[int, int]:
    """(query blocks over rows 1..N-1, key blocks over keys 0..N-1)."""
    return -(-(num_tokens - 1) // block), -(-num_tokens // block)


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
    b, h = block_indices.shape[:2]
    n = num_tokens
    nk = block_counts(n, block)[1]
    chosen = jax.nn.one_hot(block_indices, nk, dtype=jnp.int32).sum(-2) > 0  # [B, H, nq, nk]
    row_block = (np.arange(n - 1) // block)
    key_block = (np.arange(n) // block)
    rows = chosen[:, :, row_block][:, :, :, key_block]
    return jnp.concatenate([jnp.ones((b, h, 1, n), bool), rows], axis=2)


def pad_blocks(x: jax.Array, blocks: int, block: int) -> jax.Array:
    """[B, H, n, d] -> [B, H, blocks, block, d], zero rows appended."""
    b, h, n, d = x.shape
    return jnp.pad(x, ((0, 0), (0, 0), (0, blocks * block - n), (0, 0))).reshape(b, h, blocks, block, d)


def block_sparse_attention(q: jax.Array, k: jax.Array, v: jax.Array, block_indices: jax.Array, scale: float,
                           block: int, *, dot_generals=NO_DOT_GENERALS) -> tuple[jax.Array, jax.Array]:
    """Outputs [B, H, N, d] and class-row weights [B, H, N] under the block selection [B, H, nq, kb].

    The key blocks of one query block must be distinct (as `top_key_blocks` gives them).
    """
    check_block(block)
    b, h, n, d = q.shape
    nq, nk = block_counts(n, block)
    if block_indices.shape[:3] != (b, h, nq):
        raise ValueError(f"block_indices shape {block_indices.shape}: expected ({b}, {h}, {nq}, kb) "
                         f"for {n} tokens in blocks of {block}")
    logits_dot, mix_dot = dot_generals
    kb = block_indices.shape[-1]

    cls_logits = einsum("bhqd,bhkd->bhqk", q[:, :, :1], k, logits_dot).astype(jnp.float32) * scale
    cls_weights = jax.nn.softmax(cls_logits, axis=-1).astype(q.dtype)
    cls_out = einsum("bhqk,bhkd->bhqd", cls_weights, v, mix_dot)

    k_blocks, v_blocks = pad_blocks(k, nk, block), pad_blocks(v, nk, block)

    def rows(queries, indices):  # query blocks [B, H, c, block, d] and their key blocks [B, H, c, kb]
        c = indices.shape[2]

        def gather(blocks):  # the kept blocks of every query block, [B, H, c, kb * block, d]
            picked = jnp.take_along_axis(blocks, indices.reshape(b, h, c * kb, 1, 1), axis=2)
            return picked.reshape(b, h, c, kb * block, d)

        logits = einsum("bhqid,bhqjd->bhqij", queries, gather(k_blocks), logits_dot).astype(jnp.float32)
        if n % block:
            key_pos = (indices[..., None] * block + jnp.arange(block)).reshape(b, h, c, 1, kb * block)
            logits = jnp.where(key_pos < n, logits, jnp.finfo(jnp.float32).min)
        # softmax with its normalization deferred past the mixing matmul: one division per output, not per logit
        unnormalized = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
        out = einsum("bhqij,bhqjd->bhqid", unnormalized.astype(q.dtype), gather(v_blocks), mix_dot)
        return out / unnormalized.sum(-1, keepdims=True).astype(q.dtype)

    queries = pad_blocks(q[:, :, 1:], nq, block) * jnp.asarray(scale, q.dtype)
    steps = -(-nq // QUERY_BLOCKS_PER_STEP)
    gathered_bytes = b * h * nq * kb * block * d * jnp.dtype(k.dtype).itemsize
    if steps > 1 and gathered_bytes > LOOP_ABOVE_BYTES and dot_generals == NO_DOT_GENERALS:
        pad = steps * QUERY_BLOCKS_PER_STEP - nq
        by_step = lambda x: jnp.moveaxis(  # noqa: E731
            jnp.pad(x, ((0, 0), (0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 3)).reshape(
                b, h, steps, QUERY_BLOCKS_PER_STEP, *x.shape[3:]), 2, 0)
        step = jax.checkpoint(lambda a: rows(*a))  # the backward recomputes a step's gathers and logits
        rows_out = jnp.moveaxis(jax.lax.map(step, (by_step(queries), by_step(block_indices))), 0, 2)
    else:  # injected dot_generals (AQT, qwix) are modules, which run outside JAX's loop transforms
        rows_out = rows(queries, block_indices)
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

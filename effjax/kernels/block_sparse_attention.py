"""Pallas kernel for block-sparse attention: one program per (batch x head, query block), online softmax.

The same computation as `effjax.models.block_sparse.block_sparse_attention` (see there for
how the key blocks are chosen), fused as in FlashAttention (Dao et al., NeurIPS 2022,
Alg. 1): a program holds one query block, visits only its kb chosen key blocks, and
keeps the running row maximum m, normaliser l and unnormalised output acc, so neither
the gathered keys nor the b x (kb b) logits are written to memory:

  for each chosen key block J:  s = q K_J^T * scale  (padded keys -> -inf)
      m' = max(m, rowmax s);  p = exp(s - m');  l = l e^(m - m') + rowsum p
      acc = acc e^(m - m') + p V_J;  m = m'
  out = acc / l

The block indices (one flat int32 array, in SMEM on TPU) are read inside the kernel
and index the key / value blocks of the current head dynamically; the kernel lowers
with Mosaic on TPU (checked by compiling for a v5e topology ahead of time with libtpu)
and with Triton on GPU (power-of-two block counts, head width a power of two), and
runs in Pallas interpret mode on CPU (tests). It is forward only (inference).
`backend_path()` picks this kernel on accelerators and the XLA gather path on CPU,
where interpretation is only for checking.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from effjax.models import block_sparse as bs


def _kernel(idx_ref, q_ref, k_ref, v_ref, o_ref, *, scale: float, block: int, kept: int, num_tokens: int,
            query_blocks: int):
    q = q_ref[...] * jnp.asarray(scale, q_ref.dtype)  # [block, d]; the matmuls take the input dtype, accumulate in f32
    d = q.shape[-1]
    base = (pl.program_id(0) * query_blocks + pl.program_id(1)) * kept

    def visit(j, carry):
        m, norm, acc = carry
        kb = idx_ref[base + j]
        keys = k_ref[kb]  # [block, d]
        values = v_ref[kb]
        s = jax.lax.dot_general(q, keys, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        key_pos = kb * block + jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
        s = jnp.where(key_pos < num_tokens, s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(axis=1))
        p = jnp.exp(s - m_new[:, None])
        correction = jnp.exp(m - m_new)
        norm = norm * correction + p.sum(axis=1)
        mixed = jax.lax.dot_general(p.astype(values.dtype), values, (((1,), (0,)), ((), ())),
                                    preferred_element_type=jnp.float32)
        acc = acc * correction[:, None] + mixed
        return m_new, norm, acc

    init = (jnp.full((block,), -jnp.inf, jnp.float32), jnp.zeros((block,), jnp.float32),
            jnp.zeros((block, d), jnp.float32))
    _, norm, acc = jax.lax.fori_loop(0, kept, visit, init)
    o_ref[...] = (acc / norm[:, None]).astype(o_ref.dtype)


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def block_rows_attention(q_blocks, k_blocks, v_blocks, block_indices, scale: float, num_tokens: int,
                         interpret: bool = False, platform: str | None = None):
    """q_blocks [BH, nq, b, d], k/v_blocks [BH, nk, b, d], block_indices [BH, nq, kb] -> [BH, nq, b, d]."""
    platform = platform or jax.default_backend()
    bh, nq, block, d = q_blocks.shape
    kept = block_indices.shape[-1]
    flat = block_indices.reshape(-1).astype(jnp.int32)
    if platform == "tpu":
        index_spec = pl.BlockSpec(memory_space=pltpu.SMEM)
    else:  # Triton wants power-of-two block shapes: pad the index list and the key blocks (never chosen)
        flat = jnp.pad(flat, (0, _next_pow2(flat.size) - flat.size))
        index_spec = pl.BlockSpec((flat.size,), lambda h, i: (0,))
        pad = _next_pow2(k_blocks.shape[1]) - k_blocks.shape[1]
        k_blocks, v_blocks = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (k_blocks, v_blocks))
    nk = k_blocks.shape[1]
    kernel = functools.partial(_kernel, scale=scale, block=block, kept=kept, num_tokens=num_tokens, query_blocks=nq)
    return pl.pallas_call(
        kernel,
        grid=(bh, nq),
        in_specs=[
            index_spec,
            pl.BlockSpec((None, None, block, d), lambda h, i: (h, i, 0, 0)),
            pl.BlockSpec((None, nk, block, d), lambda h, i: (h, 0, 0, 0)),
            pl.BlockSpec((None, nk, block, d), lambda h, i: (h, 0, 0, 0)),
        ],
        out_specs=pl.BlockSpec((None, None, block, d), lambda h, i: (h, i, 0, 0)),
        out_shape=jax.ShapeDtypeStruct(q_blocks.shape, q_blocks.dtype),
        interpret=interpret,
    )(flat, q_blocks, k_blocks, v_blocks)


def block_sparse_attention_pallas(q, k, v, block_indices, scale: float, block: int, interpret: bool = False,
                                  platform: str | None = None) -> tuple[jax.Array, jax.Array]:
    """`block_sparse.block_sparse_attention` with the query rows in the Pallas kernel: (outputs, class-row weights)."""
    bs.check_block(block)
    b, h, n, d = q.shape
    nq, nk = bs.block_counts(n, block)
    if block_indices.shape[:3] != (b, h, nq):
        raise ValueError(f"block_indices shape {block_indices.shape}: expected ({b}, {h}, {nq}, kb) "
                         f"for {n} tokens in blocks of {block}")
    cls_weights = jax.nn.softmax(jnp.einsum("bhd,bhkd->bhk", q[:, :, 0], k).astype(jnp.float32) * scale, axis=-1)
    cls_out = jnp.einsum("bhk,bhkd->bhd", cls_weights.astype(q.dtype), v)[:, :, None]

    def blocks(x, count):
        return bs.pad_blocks(x, count, block).reshape(b * h, count, block, d)

    rows = block_rows_attention(blocks(q[:, :, 1:], nq), blocks(k, nk), blocks(v, nk),
                                block_indices.reshape(b * h, nq, -1), scale, n, interpret, platform)
    rows = rows.reshape(b, h, nq * block, d)[:, :, :n - 1]
    return jnp.concatenate([cls_out, rows], axis=2), cls_weights.astype(q.dtype)


def backend_path(platform: str | None = None) -> str:
    """"pallas" on GPU / TPU, "xla" (the gather + block-matmul path) on CPU."""
    platform = platform or jax.default_backend()
    return "pallas" if platform in ("gpu", "cuda", "rocm", "tpu") else "xla"


def block_sparse_attention_auto(q, k, v, block_indices, scale: float, block: int):
    """The block-sparse attention of the current backend (`backend_path`)."""
    if backend_path() == "pallas":
        return block_sparse_attention_pallas(q, k, v, block_indices, scale, block)
    return bs.block_sparse_attention(q, k, v, block_indices, scale, block)

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
runs in Pallas interpret mode on CPU (tests). `kernel_supports` says which shapes
each lowering takes.

The kernel is forward only; `block_sparse_attention_trainable` makes it
differentiable with a custom VJP whose backward is the VJP of the XLA path,
recomputed from the saved q, k, v. `sparse_attention(..., path="block_sparse")`
runs that on GPU / TPU (`backend_path()`) when the attention einsums are plain
float ones and the kernel supports the shapes, and the XLA path otherwise: always on
CPU, where the kernel only runs interpreted, for checking.
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
    b, h, n, d = q.shape
    nq, nk = bs.checked_block_counts(q, block_indices, block)
    cls_weights = jax.nn.softmax(jnp.einsum("bhd,bhkd->bhk", q[:, :, 0], k).astype(jnp.float32) * scale, axis=-1)
    cls_out = jnp.einsum("bhk,bhkd->bhd", cls_weights.astype(q.dtype), v)[:, :, None]

    def blocks(x, count):
        return bs.pad_blocks(x, count, block).reshape(b * h, count, block, d)

    rows = block_rows_attention(blocks(q[:, :, 1:], nq), blocks(k, nk), blocks(v, nk),
                                block_indices.reshape(b * h, nq, -1), scale, n, interpret, platform)
    rows = rows.reshape(b, h, nq * block, d)[:, :, :n - 1]
    return jnp.concatenate([cls_out, rows], axis=2), cls_weights.astype(q.dtype)


_KERNEL_PLATFORMS = {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}
_KERNEL_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
TRITON_MIN_DOT_WIDTH = 16  # tl.dot wants every matmul dimension at least 16
TPU_INDEX_BYTES = 512 * 1024  # the flat block indices in SMEM: half of a v4+ core's 1 MiB
TPU_KEY_VALUE_BYTES = 12 * 1024 * 1024  # one head's key and value blocks, double-buffered, in 16 MiB of scoped VMEM


def kernel_platform(platform: str | None = None) -> str | None:
    """The kernel's lowering for a JAX platform (default: the running one): "gpu" (Triton), "tpu" (Mosaic),
    None where there is none (CPU)."""
    return _KERNEL_PLATFORMS.get(platform or jax.default_backend())


def backend_path(platform: str | None = None) -> str:
    """"pallas" on GPU / TPU, "xla" (the gather + block-matmul path) on CPU."""
    return "pallas" if kernel_platform(platform) else "xla"


def interpreted_here(platform: str | None) -> bool:
    """Whether the kernel lowered for `platform` must run in interpret mode on the running backend."""
    return kernel_platform(platform) != kernel_platform()


def kernel_supports(q_shape: tuple[int, ...], kept_blocks: int, block: int, dtype, platform: str | None = None
                    ) -> bool:
    """Whether the kernel lowered for `platform` takes q [B, H, N, d] of `dtype` with `kept_blocks` of `block`."""
    b, h, n, d = q_shape
    if block not in bs.BLOCK_SIZES or n < 2 or jnp.dtype(dtype) not in _KERNEL_DTYPES:
        return False
    nq, nk = bs.block_counts(n, block)
    if not 0 < kept_blocks <= nk:
        return False
    if kernel_platform(platform) == "tpu":
        whole_head = nk * block * d * jnp.dtype(dtype).itemsize
        return b * h * nq * kept_blocks * 4 <= TPU_INDEX_BYTES and 4 * whole_head <= TPU_KEY_VALUE_BYTES
    return d >= TRITON_MIN_DOT_WIDTH and d & (d - 1) == 0  # Triton: power-of-two tile sizes


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _pallas_forward_xla_backward(q, k, v, block_indices, scale, block, platform, interpret):
    return block_sparse_attention_pallas(q, k, v, block_indices, scale, block, interpret, platform)


def _forward(q, k, v, block_indices, scale, block, platform, interpret):
    outputs = block_sparse_attention_pallas(q, k, v, block_indices, scale, block, interpret, platform)
    return outputs, (q, k, v, block_indices)


def _backward(scale, block, platform, interpret, residuals, cotangents):
    q, k, v, block_indices = residuals
    _, xla_vjp = jax.vjp(lambda q, k, v: bs.block_sparse_attention(q, k, v, block_indices, scale, block), q, k, v)
    return (*xla_vjp(cotangents), None)  # integer block indices: no cotangent


_pallas_forward_xla_backward.defvjp(_forward, _backward)


def block_sparse_attention_trainable(q, k, v, block_indices, scale: float, block: int, platform: str | None = None,
                                     interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """`block_sparse_attention_pallas` with gradients: (outputs, class-row weights) from the kernel, their VJP
    w.r.t. q, k, v that of the XLA path `block_sparse.block_sparse_attention`."""
    return _pallas_forward_xla_backward(q, k, v, block_indices, float(scale), int(block), platform, bool(interpret))

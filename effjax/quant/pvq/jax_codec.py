"""Vectorized JAX PVQ codec: batch search, and batch Fischer encode/decode in uint64.

Same algorithms as the NumPy references (`reference_search.search_one`, `enumeration.encode`),
written over a batch of groups [groups, L] and jit-compiled:

- search: projection + greedy pulse placement (Opus-style), then the exact refinement
  path of `reference_search.py` run for all groups at once in a `lax.while_loop` that stops when
  every group is past its last curvature;
- encode/decode: Fischer (1986) offsets gathered from the uint64 table
  `counting.offset_tables_uint64`, one coordinate per step (the walk of
  `enumeration.encode_offsets` / `decode_offsets`, jit-compiled). Used only when
  N(L, K) < 2**64; larger pyramids go to the Python-integer path in `enumeration.py`.

All work runs under `jax.enable_x64(True)` (float64 search, uint64 indices) without
changing the global JAX configuration.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from effjax.quant.pvq import enumeration
from effjax.quant.pvq.counting import check_dims, fits_uint64, num_codewords, offset_tables_uint64
from effjax.quant.pvq.reference_search import RELATIVE_IMPROVEMENT, check_search_input, curvature_interval, max_path_steps


def _place_remaining(y, K, score):
    """Add the (at most L) pulses y lacks for K one at a time, each to the coordinate of largest score(y)."""
    L = y.shape[-1]

    def place_one(_, y):
        pick = jax.nn.one_hot(jnp.argmax(score(y), axis=-1), L, dtype=jnp.int32)
        return y + pick * (y.sum(-1, keepdims=True) < K)

    return jax.lax.fori_loop(0, L, place_one, y)


def _greedy(magnitudes, K):
    """Projection then greedy placement of the (at most L) remaining pulses. [B, L] float64."""
    total = magnitudes.sum(-1, keepdims=True)
    y = jnp.floor((K - 0.5) * magnitudes / jnp.where(total > 0, total, 1.0)).astype(jnp.int32)
    y = jnp.where(total > 0, y, 0)

    def gains(y):
        yf = y.astype(magnitudes.dtype)
        xy = (magnitudes * yf).sum(-1, keepdims=True)
        yy = (yf * yf).sum(-1, keepdims=True)
        return (xy + magnitudes) ** 2 / (yy + 2 * yf + 1)

    return _place_remaining(y, K, gains)


def _allocation_at(magnitudes, K, curvature):
    """Batch version of `reference_search.allocation_at` (the K largest marginals
    a_i - c (2m - 1)) without a top-k over L*K values: a water-filling threshold theta solves
    sum_i max(0, (a_i + c - theta) / (2c)) = K; coordinate i then holds every marginal above
    theta (at most K in total, at least K - L), and the few pulses left go one at a time to
    the largest next marginal, which completes the top K because marginals fall with m."""
    L = magnitudes.shape[-1]
    c = jnp.where(curvature > 0, curvature, 1.0)[:, None]
    shifted = magnitudes + c
    ordered = -jnp.sort(-shifted, axis=-1)
    active = jnp.arange(1, L + 1, dtype=magnitudes.dtype)
    thresholds = (jnp.cumsum(ordered, axis=-1) - 2 * c * K) / active
    last_active = jnp.sum(thresholds < ordered, axis=-1, keepdims=True) - 1
    theta = jnp.take_along_axis(thresholds, jnp.maximum(last_active, 0), axis=-1)
    relaxed = jnp.maximum((shifted - theta) / (2 * c), 0.0)
    y = jnp.maximum(jnp.ceil(relaxed * (1 - 1e-12) - 1e-12) - 1, 0).astype(jnp.int32)
    return _place_remaining(y, K, lambda y: magnitudes - c * (2 * y + 1))  # the next marginal of each coordinate


def _objective(magnitudes, y):
    yf = y.astype(magnitudes.dtype)
    yy = (yf * yf).sum(-1)
    return (magnitudes * yf).sum(-1) ** 2 / jnp.where(yy > 0, yy, 1.0)


@functools.partial(jax.jit, static_argnames=("K", "refine"))
def _search_kernel(x, K: int, refine: bool):
    B, L = x.shape
    magnitudes = jnp.abs(x)
    y = _greedy(magnitudes, K)
    if refine:
        best, best_value = y, _objective(magnitudes, y)
        curvature, last_curvature = curvature_interval(magnitudes, best_value, K, xp=jnp)
        y = _allocation_at(magnitudes, K, curvature)
        rows = jnp.arange(B)

        def keep_going(state):
            step, _, _, done, _, _ = state
            return (step < max_path_steps(L, K)) & ~jnp.all(done)

        def walk(state):
            step, y, curvature, done, best, best_value = state
            value = _objective(magnitudes, y)
            better = (value > best_value * (1 + RELATIVE_IMPROVEMENT)) & ~done
            best = jnp.where(better[:, None], y, best)
            best_value = jnp.where(better, value, best_value)
            excess = y[:, :, None] - y[:, None, :] - 1
            valid = (excess > 0) & (y[:, :, None] > 0)
            gap = magnitudes[:, :, None] - magnitudes[:, None, :]
            crossing = gap / (2.0 * jnp.where(valid, excess, 1))
            crossing = jnp.where(valid & (crossing >= curvature[:, None, None]), crossing, jnp.inf)
            flat = jnp.argmin(crossing.reshape(B, L * L), axis=-1)
            event = crossing.reshape(B, L * L)[rows, flat]
            done = done | (event > last_curvature)
            move = (jax.nn.one_hot(flat % L, L, dtype=jnp.int32) - jax.nn.one_hot(flat // L, L, dtype=jnp.int32))
            y = y + move * (~done)[:, None]
            curvature = jnp.where(done, curvature, event)
            return step + 1, y, curvature, done, best, best_value

        done = magnitudes.sum(-1) == 0  # zero rows (and batch padding) have nothing to refine
        state = (0, y, curvature, done, best, best_value)
        _, _, _, _, y, _ = jax.lax.while_loop(keep_going, walk, state)
    zero = magnitudes.sum(-1) == 0
    y = jnp.where(zero[:, None], jax.nn.one_hot(0, L, dtype=jnp.int32) * K, y)
    return jnp.where(x < 0, -y, y)


MIN_BUCKET = 256
SEARCH_CHUNK_ELEMENTS = 2**22  # rows * L * L per search call: bounds the walk's [rows, L, L] temporaries


def _bucket(rows: int) -> int:
    """Batch sizes are padded to a power of two so that jit compiles few shapes."""
    return max(MIN_BUCKET, 1 << (rows - 1).bit_length())


def _pad_rows(array: np.ndarray, fill) -> np.ndarray:
    rows = array.shape[0]
    padding = np.broadcast_to(np.asarray(fill, array.dtype), (_bucket(rows) - rows,) + array.shape[1:])
    return np.concatenate([array, padding])


def search_batch(x, K: int, refine: bool = True) -> np.ndarray:
    """Codewords [..., L] (int64) of P(L, K) nearest in angle to each vector of x [..., L]."""
    x = check_search_input(x, K)
    flat = x.reshape(-1, x.shape[-1])
    if K == 0 or flat.shape[0] == 0:
        return np.zeros(x.shape, np.int64)
    L = flat.shape[1]
    chunk_rows = max(MIN_BUCKET, 1 << (SEARCH_CHUNK_ELEMENTS // (L * L)).bit_length() - 1)
    pieces = []
    with jax.enable_x64(True):
        for start in range(0, flat.shape[0], chunk_rows):
            chunk = flat[start : start + chunk_rows]
            y = _search_kernel(jnp.asarray(_pad_rows(chunk, 0.0)), K=int(K), refine=bool(refine))
            pieces.append(np.asarray(y, dtype=np.int64)[: chunk.shape[0]])
    return np.concatenate(pieces).reshape(x.shape)


_encode_kernel = jax.jit(functools.partial(enumeration.encode_offsets, xp=jnp), static_argnames=("K",))
_decode_kernel = jax.jit(functools.partial(enumeration.decode_offsets, xp=jnp), static_argnames=("L", "K"))


def encode_batch(codewords, K: int) -> np.ndarray:
    """Indices of codewords [groups, L]: uint64 via JAX when N(L, K) < 2**64, else Python ints (object)."""
    codewords = np.asarray(codewords)
    L = codewords.shape[-1] if codewords.ndim == 2 else 0
    check_dims(max(L, 1), K)
    if not fits_uint64(L, K) or codewords.shape[0] == 0:
        return enumeration.encode_batch(codewords, K)
    enumeration._check_batch(codewords, K)
    start, _ = offset_tables_uint64(L, K)
    with jax.enable_x64(True):
        first_codeword = np.eye(1, L, dtype=np.int32)[0] * K
        padded = _pad_rows(codewords.astype(np.int32), first_codeword)
        index = _encode_kernel(jnp.asarray(padded), jnp.asarray(start), K=int(K))
        return np.asarray(index, dtype=np.uint64)[: codewords.shape[0]]


def decode_batch(indices, L: int, K: int) -> np.ndarray:
    """Codewords [groups, L] (int64) of indices: JAX uint64 path or Python-int path."""
    L, K = check_dims(L, K)
    if not fits_uint64(L, K):
        return enumeration.decode_batch(indices, L, K)
    indices = np.asarray(indices)
    if indices.dtype != np.uint64 or indices.ndim != 1:
        indices = enumeration.check_indices(indices, L, K)
    elif indices.size and int(indices.max()) >= num_codewords(L, K):
        raise ValueError(f"index {int(indices.max())} out of range [0, N({L}, {K}) = {num_codewords(L, K)})")
    if indices.size == 0:
        return np.zeros((0, L), np.int64)
    start, size = offset_tables_uint64(L, K)
    with jax.enable_x64(True):
        padded = _pad_rows(indices, 0)
        y = _decode_kernel(jnp.asarray(padded), jnp.asarray(start), jnp.asarray(size), L=L, K=K)
        return np.asarray(y, dtype=np.int64)[: indices.shape[0]]

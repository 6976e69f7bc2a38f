"""Fischer's enumeration of the pyramid P(L, K): an exact bijection P(L, K) <-> 0..N(L, K)-1.

Fischer (1986), "A pyramid vector quantizer", Sec. IV: walk the coordinates left to right
with l coordinates and k pulses left. Ordering the values of the current coordinate as
0, +1, -1, +2, -2, ..., a coordinate of value v (|v| = m) adds to the index

    0                                               if m = 0,
    N(l-1, k) + 2 * sum_{j=1}^{m-1} N(l-1, k-j)     if v = +m,
    the same + N(l-1, k-m)                          if v = -m,

then k <- k - m. Decoding inverts the walk. This module holds the exact Python-integer
path (any L, K) and a batch path (uint64 when N(L, K) < 2**64, Python ints in an object
array otherwise) whose uint64 walk (`encode_offsets` / `decode_offsets`) is written for
numpy or jax.numpy; `jax_codec.py` jit-compiles it.
"""

from __future__ import annotations

import numpy as np

from effjax.quant.pvq.counting import check_dims, count_table, fits_uint64, num_codewords, offset_tables_uint64


def _as_codeword(y, K=None) -> tuple[list[int], int]:
    values = np.asarray(y)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"codeword must be a non-empty 1-D vector, got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or np.all(values == np.round(values))):
        raise ValueError("codeword must have integer entries")
    values = [int(v) for v in values]
    norm = sum(abs(v) for v in values)
    if K is not None and norm != K:
        raise ValueError(f"codeword has L1 norm {norm}, expected K = {K}")
    return values, norm


def encode(y, K: int | None = None) -> int:
    """Index in 0..N(L, K)-1 of the integer vector y (K = ||y||_1, checked when given)."""
    values, norm = _as_codeword(y, K)
    L = len(values)
    table = count_table(L, norm)
    index, k = 0, norm
    for position, v in enumerate(values):
        m = abs(v)
        if m:
            below = table[L - position - 1]
            index += below[k] + 2 * sum(below[k - j] for j in range(1, m)) + (below[k - m] if v < 0 else 0)
            k -= m
    return index


def decode(index: int, L: int, K: int) -> np.ndarray:
    """The codeword of P(L, K) with the given index (inverse of `encode`), as int64."""
    L, K = check_dims(L, K)
    total = num_codewords(L, K)
    if int(index) != index or not 0 <= index < total:
        raise ValueError(f"index {index!r} out of range [0, N({L}, {K}) = {total})")
    index, k = int(index), K
    table = count_table(L, K)
    y = np.zeros(L, dtype=np.int64)
    for position in range(L):
        below = table[L - position - 1]
        if index < below[k]:
            continue
        index -= below[k]
        m = 1
        while index >= 2 * below[k - m]:
            index -= 2 * below[k - m]
            m += 1
        if index >= below[k - m]:
            index -= below[k - m]
            y[position] = -m
        else:
            y[position] = m
        k -= m
    return y


def _check_batch(codewords, K: int) -> np.ndarray:
    codewords = np.asarray(codewords)
    if codewords.ndim != 2 or codewords.shape[1] < 1:
        raise ValueError(f"codewords must have shape [groups, L], got {codewords.shape}")
    if not np.issubdtype(codewords.dtype, np.integer):
        raise ValueError(f"codewords must be integers, got dtype {codewords.dtype}")
    norms = np.abs(codewords).sum(axis=1)
    if codewords.shape[0] and np.any(norms != K):
        bad = int(np.flatnonzero(norms != K)[0])
        raise ValueError(f"codeword {bad} has L1 norm {int(norms[bad])}, expected K = {K}")
    return codewords.astype(np.int64)


def encode_offsets(codewords, start, K: int, xp=np):
    """uint64 indices of codewords [groups, L] from the offset table `start` of
    `counting.offset_tables_uint64`, one coordinate per step (`xp`: numpy, or jax.numpy under jit)."""
    L = codewords.shape[1]
    # slot of each value in the order 0, +1, -1, +2, -2, ...: 2v-1 for v > 0, 2|v| for v < 0
    slots = xp.where(codewords > 0, 2 * codewords - 1, -2 * codewords)
    index = xp.zeros(codewords.shape[0], xp.uint64)
    pulses_left = xp.full(codewords.shape[0], K)
    for position in range(L):
        index = index + start[L - position, pulses_left, slots[:, position]]
        pulses_left = pulses_left - xp.abs(codewords[:, position])
    return index


def decode_offsets(indices, start, size, L: int, K: int, xp=np):
    """Codewords [groups, L] of uint64 indices from the offset tables (inverse of `encode_offsets`)."""
    remaining = indices
    pulses_left = xp.full(indices.shape[0], K)
    slot_ids = xp.arange(2 * K + 1)
    columns = []
    for position in range(L):
        starts = start[L - position, pulses_left]  # [groups, 2K+1]
        inside = (starts <= remaining[:, None]) & (size[L - position, pulses_left] > 0)
        slot = xp.max(xp.where(inside, slot_ids, 0), axis=-1)
        magnitude = (slot + 1) // 2
        columns.append(xp.where(slot % 2 == 1, magnitude, -magnitude))
        remaining = remaining - xp.take_along_axis(starts, slot[:, None], axis=1)[:, 0]
        pulses_left = pulses_left - magnitude
    return xp.stack(columns, axis=1)


def encode_batch(codewords, K: int) -> np.ndarray:
    """Indices of a batch [groups, L] of codewords: uint64 if N(L, K) < 2**64, else object (Python ints)."""
    L = np.shape(codewords)[-1] if np.ndim(codewords) == 2 else 0
    check_dims(max(L, 1), K)
    codewords = _check_batch(codewords, K)
    if not fits_uint64(L, K):
        return np.array([encode(y) for y in codewords] or [], dtype=object)
    return encode_offsets(codewords, offset_tables_uint64(L, K)[0], K)


def check_indices(indices, L: int, K: int) -> np.ndarray:
    """Validate a batch of indices against N(L, K); returns uint64 or object array."""
    total = num_codewords(L, K)
    as_objects = np.asarray(indices, dtype=object).reshape(-1)
    for i in as_objects:
        if int(i) != i or not 0 <= i < total:
            raise ValueError(f"index {i!r} out of range [0, N({L}, {K}) = {total})")
    if fits_uint64(L, K):
        return np.array([int(i) for i in as_objects], dtype=np.uint64)
    return np.array([int(i) for i in as_objects] or [], dtype=object)


def decode_batch(indices, L: int, K: int) -> np.ndarray:
    """Codewords [groups, L] (int64) of a batch of indices (inverse of `encode_batch`)."""
    L, K = check_dims(L, K)
    indices = check_indices(indices, L, K)
    if not fits_uint64(L, K):
        return np.stack([decode(i, L, K) for i in indices]) if len(indices) else np.zeros((0, L), np.int64)
    return decode_offsets(indices, *offset_tables_uint64(L, K), L, K).astype(np.int64)

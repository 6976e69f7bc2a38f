"""Exact codeword counts of the pyramid P(L, K) = {y in Z^L : ||y||_1 = K}.

Fischer (1986), "A pyramid vector quantizer", IEEE Trans. IT-32, eq. (8): the number of
integer vectors of dimension L and L1 norm K obeys

    N(L, K) = N(L-1, K) + N(L-1, K-1) + N(L, K-1),   N(L, 0) = 1,   N(0, K > 0) = 0.

Counts are Python integers (arbitrary size). The uint64 tables used by the vectorized
codecs are built only where every entry fits, which `fits_uint64` checks.
"""

from __future__ import annotations

import functools
import math

import numpy as np

UINT64_LIMIT = 2**64


def check_dims(L, K) -> tuple[int, int]:
    """Validate a (dimension, pulses) pair and return it as Python ints."""
    if int(L) != L or L < 1:
        raise ValueError(f"dimension L must be an integer >= 1, got {L!r}")
    if int(K) != K or K < 0:
        raise ValueError(f"pulses K must be an integer >= 0, got {K!r}")
    return int(L), int(K)


@functools.lru_cache(maxsize=64)
def count_table(L: int, K: int) -> tuple[tuple[int, ...], ...]:
    """table[l][k] = N(l, k) for 0 <= l <= L, 0 <= k <= K, as Python ints."""
    rows = [[1] + [0] * K]
    for _ in range(L):
        prev, row = rows[-1], [1]
        for k in range(1, K + 1):
            row.append(prev[k] + prev[k - 1] + row[k - 1])
        rows.append(row)
    return tuple(tuple(r) for r in rows)


def num_codewords(L: int, K: int) -> int:
    """N(L, K): the number of integer vectors in L dimensions with L1 norm K (exact)."""
    L, K = check_dims(L, K)
    return count_table(L, K)[L][K]


def index_bits(L: int, K: int) -> int:
    """ceil(log2 N(L, K)): bits of a fixed-length codeword index (0 when N == 1)."""
    return (num_codewords(L, K) - 1).bit_length()


def shape_bits_per_weight(L: int, K: int) -> float:
    """log2 N(L, K) / L, the rate of an ideal (entropy-free, uniform) index code."""
    return math.log2(num_codewords(L, K)) / L


def fits_uint64(L: int, K: int) -> bool:
    """True when every index (and every partial offset) of P(L, K) fits in a uint64.

    The enumeration offsets of P(L, K) are bounded by N(L, K), and the tables hold
    N(l, k) for l <= L, k <= K, which grow in both l and k, so N(L, K) < 2**64 suffices.
    """
    return num_codewords(L, K) < UINT64_LIMIT


@functools.lru_cache(maxsize=64)
def offset_tables_uint64(L: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Fischer offsets in the value order 0, +1, -1, +2, -2, ..., +K, -K, as uint64 arrays [L+1, K+1, 2K+1].

    For l coordinates left (this one included) and k pulses left, value slot t
    (t = 0 for 0, t = 2m-1 for +m, t = 2m for -m) starts at start[l][k][t] and holds
    size[l][k][t] = N(l-1, k-|v|) codewords (0 when |v| > k). Requires fits_uint64: every
    entry, and every running sum over t (at most N(l, k)), is then exact in uint64.
    """
    if not fits_uint64(L, K):
        raise ValueError(f"N({L}, {K}) = {num_codewords(L, K)} does not fit in uint64")
    table = np.array(count_table(L, K), dtype=np.uint64)  # [L+1, K+1]
    left = np.arange(K + 1)[:, None] - (np.arange(2 * K + 1) + 1) // 2  # [k, t]: pulses left after slot t
    size = np.zeros((L + 1, K + 1, 2 * K + 1), np.uint64)
    size[1:] = np.where(left >= 0, table[:-1][:, np.maximum(left, 0)], np.uint64(0))
    start = np.cumsum(size, axis=-1, dtype=np.uint64) - size
    return start, size

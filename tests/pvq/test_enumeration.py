"""Fischer enumeration: exact bijection, NumPy/JAX batch paths, Python-int path, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effjax.quant.pvq import decode, decode_batch, encode, encode_batch, num_codewords
from effjax.quant.pvq import enumeration
from effjax.quant.pvq.reference_search import all_codewords


@st.composite
def codewords(draw, max_dim: int = 8, max_pulses: int = 10):
    """(y, K): a random integer vector with ||y||_1 = K, dimension 1..max_dim."""
    L = draw(st.integers(1, max_dim))
    K = draw(st.integers(0, max_pulses))
    positions = draw(st.lists(st.integers(0, L - 1), min_size=K, max_size=K))
    signs = draw(st.lists(st.booleans(), min_size=L, max_size=L))
    y = np.bincount(np.array(positions, dtype=np.int64), minlength=L)
    return np.where(signs, -y, y).astype(np.int64), K


@settings(max_examples=200, deadline=None)
@given(codewords(max_dim=40, max_pulses=40))
def test_round_trip_random_codewords(sample):
    y, K = sample
    index = encode(y)
    assert 0 <= index < num_codewords(len(y), K)
    np.testing.assert_array_equal(decode(index, len(y), K), y)


@pytest.mark.parametrize("L, K", [(1, 3), (3, 4), (4, 3), (5, 5), (8, 3)])
def test_bijection_onto_range(L, K):
    table = all_codewords(L, K)
    assert len({tuple(y) for y in table}) == num_codewords(L, K)
    assert [encode(y) for y in table] == list(range(num_codewords(L, K)))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 14), st.integers(0, 2**32))
def test_numpy_batch_path_matches_python(L, K, seed):
    rng = np.random.default_rng(seed)
    total = num_codewords(L, K)
    indices = np.unique(rng.integers(0, total, size=16, dtype=np.uint64))
    expected = np.stack([decode(int(i), L, K) for i in indices])
    np.testing.assert_array_equal(enumeration.decode_batch(indices, L, K), expected)
    np.testing.assert_array_equal(enumeration.encode_batch(expected, K), indices)


@pytest.mark.parametrize("L, K", [(8, 12), pytest.param(1, 4, marks=pytest.mark.slow), pytest.param(16, 16, marks=pytest.mark.slow)])
def test_jax_batch_path_matches_python(L, K):
    rng = np.random.default_rng(L + K)
    total = num_codewords(L, K)
    indices = np.unique(np.array([0, total - 1] + [int(v) * total // 2**62 for v in rng.integers(0, 2**62, 200)], np.uint64))
    expected = np.stack([decode(int(i), L, K) for i in indices])
    np.testing.assert_array_equal(decode_batch(indices, L, K), expected)
    np.testing.assert_array_equal(encode_batch(expected, K), indices)


def test_python_int_path_beyond_64_bits():
    rng = np.random.default_rng(0)
    for L, K in [(32, 32), (64, 48)]:  # N > 2**64: Python-int path
        total = num_codewords(L, K)
        indices = [0, total - 1] + [int(rng.integers(0, 2**62)) * total // 2**62 for _ in range(5)]
        decoded = decode_batch(np.array(indices, dtype=object), L, K)
        assert np.all(np.abs(decoded).sum(1) == K)
        assert [int(i) for i in encode_batch(decoded, K)] == indices


def test_errors():
    with pytest.raises(ValueError, match="out of range"):
        decode(num_codewords(4, 3), 4, 3)
    with pytest.raises(ValueError, match="out of range"):
        decode(-1, 4, 3)
    with pytest.raises(ValueError, match="out of range"):
        decode_batch(np.array([2816], np.uint64), 8, 4)
    with pytest.raises(ValueError, match="L1 norm 3, expected K = 4"):
        encode([1, -2, 0], K=4)
    with pytest.raises(ValueError, match="L1 norm"):
        encode_batch(np.array([[1, 1, 0], [2, 0, 0], [3, 0, 0]]), 2)
    with pytest.raises(ValueError, match="integer"):
        encode([0.5, 1.5])
    with pytest.raises(ValueError, match="pulses K"):
        decode(0, 3, -1)

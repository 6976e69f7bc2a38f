"""N(L, K): reference values, recurrence against enumeration, input validation."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effjax.quant.pvq import fits_uint64, index_bits, num_codewords


def test_reference_counts():
    assert num_codewords(8, 4) == 2816
    assert num_codewords(8, 8) == 157184
    assert abs(num_codewords(16, 16) / 1.48e11 - 1) < 0.01
    assert abs(num_codewords(32, 32) / 1.9e23 - 1) < 0.03
    assert num_codewords(1, 0) == 1 and num_codewords(1, 5) == 2 and num_codewords(5, 0) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(0, 5))
def test_count_matches_enumeration(L, K):
    brute = sum(1 for y in itertools.product(range(-K, K + 1), repeat=L) if sum(map(abs, y)) == K)
    assert num_codewords(L, K) == brute


def test_large_counts_are_exact_python_ints():
    big = num_codewords(64, 64)
    assert isinstance(big, int) and big > 2**64
    assert big == num_codewords(63, 64) + num_codewords(63, 63) + num_codewords(64, 63)
    assert fits_uint64(16, 16) and not fits_uint64(32, 32)
    assert index_bits(8, 4) == 12 and index_bits(1, 0) == 0


@pytest.mark.parametrize("L, K, message", [(0, 3, "dimension L"), (3, -1, "pulses K"), (2.5, 1, "dimension L")])
def test_bad_dims(L, K, message):
    with pytest.raises(ValueError, match=message):
        num_codewords(L, K)

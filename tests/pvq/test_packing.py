"""PVQ checkpoints: bit packing, size on disk = reported bits, bit-exact reload."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effjax.quant.pvq import PVQSpec, QuantizedMatrix, decode_batch, dequantize_matrix, load_checkpoint, num_codewords
from effjax.quant.pvq import quantize_matrix, save_checkpoint
from effjax.quant.pvq.packing import mixed_radix_bits, pack_bits, pack_mixed_radix, unpack_bits, unpack_mixed_radix


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 100), st.data())
def test_pack_unpack_round_trip(width, data):
    values = data.draw(st.lists(st.integers(0, 2**width - 1), min_size=0, max_size=20))
    packed_ints = pack_bits(np.array(values, dtype=object), width)
    assert len(packed_ints) == (len(values) * width + 7) // 8
    assert list(unpack_bits(packed_ints, width, len(values), as_python_ints=True)) == values
    if width <= 64:
        as_uint64 = np.array(values, dtype=np.uint64)
        assert pack_bits(as_uint64, width) == packed_ints
        np.testing.assert_array_equal(unpack_bits(packed_ints, width, len(values)), as_uint64)


def _random_codes(rng, shape, spec):
    """A QuantizedMatrix with random codewords (packing does not care how they were found)."""
    groups = -(-shape[0] // spec.group_size) * shape[1]
    total = num_codewords(spec.group_size, spec.pulses)
    indices = np.array([int(v) * total // 2**62 for v in rng.integers(0, 2**62, groups)], dtype=object)
    codewords = decode_batch(indices, spec.group_size, spec.pulses)
    codes = rng.integers(0, 2**spec.scale_bits, groups).astype(np.uint16)
    codebook = np.sort(rng.random(2**spec.scale_bits)).astype(np.float32)
    return QuantizedMatrix(spec, shape, codewords, codes, codebook)


def test_checkpoint_round_trip_is_bit_exact_and_sized(tmp_path):
    rng = np.random.default_rng(0)
    layers = {
        "dense": quantize_matrix(rng.standard_normal((64, 40)), PVQSpec(8, 12, 4, rotate=True, seed=7)),
        "wide_groups": _random_codes(rng, (70, 3), PVQSpec(32, 32, 3)),  # indices beyond 64 bits
        "no_scale_bits": quantize_matrix(rng.standard_normal((16, 4)), PVQSpec(8, 12, 0)),
    }
    path = str(tmp_path / "model.pvq")
    sizes = save_checkpoint(path, layers)
    loaded = load_checkpoint(path)
    for name, coded in layers.items():
        before, after = dequantize_matrix(coded), dequantize_matrix(loaded[name])
        np.testing.assert_array_equal(before.view(np.uint32), after.view(np.uint32))
    expected_code_bytes = sum(
        (q.num_groups * q.spec.index_bits + 7) // 8 + (q.num_groups * q.spec.scale_bits + 7) // 8 for q in layers.values()
    )
    assert sizes["code_bytes"] == expected_code_bytes
    assert sizes["codebook_bytes"] == 4 * (16 + 8 + 1)
    assert sizes["file_bytes"] == (tmp_path / "model.pvq").stat().st_size
    assert sizes["file_bytes"] == sizes["header_bytes"] + sizes["code_bytes"] + sizes["codebook_bytes"]
    weights = sum(np.prod(q.shape) for q in layers.values())
    formula = sum(q.bits_per_weight * np.prod(q.shape) for q in layers.values()) / weights
    assert sizes["formula_bits_per_weight"] == pytest.approx(formula)
    assert 0 <= sizes["code_bits_per_weight"] - formula < 3 * 8 / weights


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10**30), st.integers(0, 200), st.integers(0, 2**32))
def test_mixed_radix_round_trip(radix, count, seed):
    rng = np.random.default_rng(seed)
    indices = [int(v) * radix // 2**62 for v in rng.integers(0, 2**62, count)]
    packed = pack_mixed_radix(indices, radix)
    assert len(packed) == (mixed_radix_bits(count, radix) + 7) // 8
    assert unpack_mixed_radix(packed, radix, count) == indices


def test_mixed_radix_checkpoint_reaches_log2n_rate(tmp_path):
    weights = np.random.default_rng(4).standard_normal((64, 64))
    layers = {"dense": quantize_matrix(weights, PVQSpec(8, 12, 4))}
    path = str(tmp_path / "mixed.pvq")
    sizes = save_checkpoint(path, layers, index_coding="mixed_radix")
    assert sizes["formula_bits_per_weight"] == 3.25
    assert sizes["log2N_bits_per_weight"] <= sizes["code_bits_per_weight"] < sizes["log2N_bits_per_weight"] + 0.01
    reloaded = load_checkpoint(path)["dense"]
    np.testing.assert_array_equal(dequantize_matrix(reloaded), dequantize_matrix(layers["dense"]))


def test_bad_file(tmp_path):
    path = tmp_path / "junk.pvq"
    path.write_bytes(b"NOPE" + bytes(10))
    with pytest.raises(ValueError, match="not a PVQ checkpoint"):
        load_checkpoint(str(path))

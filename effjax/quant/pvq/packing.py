"""PVQ checkpoint format: bit-packed codeword indices and gain codes, codebooks, metadata.

Layout of a `.pvq` file (all integers little-endian):

    b"PVQ1" | uint32 header length | header (UTF-8 JSON) | layer payloads, in header order

A layer payload is three byte strings: the Fischer indices, the gain codes (`scale_bits`
each, MSB first, concatenated, zero-padded to a byte) and the gain codebook
(2^scale_bits float32). The header lists each layer's name, shape, PVQSpec, group count,
index coding and byte sizes. Index codings:

- "fixed": `index_bits` = ceil(log2 N(L, K)) bits per index, packed like the gain codes.
  A layer then costs ceil(groups * index_bits / 8) + ceil(groups * scale_bits / 8)
  + 4 * 2^scale_bits bytes: the reported (ceil(log2 N) + b_s) / L bits per weight plus the
  codebook and byte padding;
- "mixed_radix": blocks of `MIXED_RADIX_BLOCK` indices are written as one base-N number
  (ceil(B log2 N) bits for B indices), which approaches log2 N bits per index (within
  1/B bit): the (log2 N + b_s) / L rate of the paper, with no entropy model.

`checkpoint_size_report` itemizes the file. Loading decodes the indices (Fischer,
`jax_codec.decode_batch`) and `weights.dequantize_matrix` rebuilds the kernels bit for bit.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from effjax.quant.pvq.counting import fits_uint64, num_codewords
from effjax.quant.pvq.jax_codec import decode_batch, encode_batch
from effjax.quant.pvq.weights import PVQSpec, QuantizedMatrix

MAGIC = b"PVQ1"
FORMAT_VERSION = 1
MIXED_RADIX_BLOCK = 64
INDEX_CODINGS = ("fixed", "mixed_radix")


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Concatenate `width`-bit unsigned values (uint64 or Python ints), MSB first, into bytes."""
    if width == 0 or len(values) == 0:
        return b""
    if width <= 64 and np.asarray(values).dtype != object:
        shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
        bits = (np.asarray(values, np.uint64)[:, None] >> shifts) & np.uint64(1)
    else:
        whole_bytes = (width + 7) // 8
        raw = np.frombuffer(b"".join(int(v).to_bytes(whole_bytes, "big") for v in values), np.uint8)
        bits = np.unpackbits(raw.reshape(len(values), whole_bytes), axis=1)[:, 8 * whole_bytes - width :]
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def unpack_bits(data: bytes, width: int, count: int, as_python_ints: bool = False) -> np.ndarray:
    """Inverse of `pack_bits`: `count` values as uint64 (or an object array of Python ints)."""
    if count == 0 or width == 0:
        return np.array([0] * count, dtype=object if as_python_ints else np.uint64)
    bits = np.unpackbits(np.frombuffer(data, np.uint8))[: count * width].reshape(count, width)
    if not as_python_ints:
        shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
        return (bits.astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
    pad = (-width) % 8
    padded = np.concatenate([np.zeros((count, pad), np.uint8), bits], axis=1)
    rows = np.packbits(padded, axis=1)
    return np.array([int.from_bytes(row.tobytes(), "big") for row in rows], dtype=object)


def _block_lengths(count: int) -> list[int]:
    return [min(MIXED_RADIX_BLOCK, count - start) for start in range(0, count, MIXED_RADIX_BLOCK)]


def mixed_radix_bits(count: int, radix: int) -> int:
    """Bits of `count` indices below `radix` coded as base-radix numbers in blocks."""
    return sum((radix**length - 1).bit_length() for length in _block_lengths(count))


def pack_mixed_radix(indices, radix: int) -> bytes:
    """Indices (each < radix) as base-radix numbers, one per block, each in its minimal bit width."""
    bits, start = [], 0
    for length in _block_lengths(len(indices)):
        value = 0
        for index in reversed(indices[start : start + length]):
            value = value * radix + int(index)
        width = (radix**length - 1).bit_length()
        if width:
            raw = np.frombuffer(value.to_bytes((width + 7) // 8, "big"), np.uint8)
            bits.append(np.unpackbits(raw)[-width:])
        start += length
    return np.packbits(np.concatenate(bits)).tobytes() if bits else b""


def unpack_mixed_radix(data: bytes, radix: int, count: int) -> list[int]:
    """Inverse of `pack_mixed_radix`."""
    stream = np.unpackbits(np.frombuffer(data, np.uint8))
    indices, position = [], 0
    for length in _block_lengths(count):
        width = (radix**length - 1).bit_length()
        chunk = np.concatenate([np.zeros((-width) % 8, np.uint8), stream[position : position + width]])
        value = int.from_bytes(np.packbits(chunk).tobytes(), "big") if width else 0
        for _ in range(length):
            value, index = divmod(value, radix)
            indices.append(index)
        position += width
    return indices


def layer_payload(quantized: QuantizedMatrix, index_coding: str = "fixed") -> tuple[bytes, bytes, bytes]:
    """The packed indices, the packed gain codes and the float32 codebook of one layer."""
    spec = quantized.spec
    indices = encode_batch(quantized.codewords, spec.pulses)
    if index_coding == "mixed_radix":
        packed_indices = pack_mixed_radix([int(i) for i in indices], spec.num_codewords)
    else:
        packed_indices = pack_bits(indices, spec.index_bits)
    return (
        packed_indices,
        pack_bits(quantized.scale_codes.astype(np.uint64), spec.scale_bits),
        quantized.scale_codebook.astype("<f4").tobytes(),
    )


def save_checkpoint(path: str, layers: dict[str, QuantizedMatrix], index_coding: str = "fixed") -> dict:
    """Write layers to `path`; returns `checkpoint_size_report` of what was written."""
    if index_coding not in INDEX_CODINGS:
        raise ValueError(f"index_coding must be one of {INDEX_CODINGS}, got {index_coding!r}")
    entries, payloads = [], []
    for name, quantized in layers.items():
        indices, scales, codebook = layer_payload(quantized, index_coding)
        spec = quantized.spec
        entries.append(
            {
                "name": name,
                "shape": list(quantized.shape),
                "group_size": spec.group_size,
                "pulses": spec.pulses,
                "scale_bits": spec.scale_bits,
                "rotate": spec.rotate,
                "seed": spec.seed,
                "num_groups": quantized.num_groups,
                "index_bits": spec.index_bits,
                "index_coding": index_coding,
                "bytes": [len(indices), len(scales), len(codebook)],
            }
        )
        payloads += [indices, scales, codebook]
    header = json.dumps({"format": "effjax-pvq", "version": FORMAT_VERSION, "layers": entries}).encode()
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(header)) + header)
        for payload in payloads:
            f.write(payload)
    return checkpoint_size_report(path)


def _read(path: str) -> tuple[dict, bytes, int]:
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a PVQ checkpoint (bad magic {data[:4]!r})")
    (header_length,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + header_length])
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported PVQ checkpoint version {header.get('version')!r}")
    return header, data, 8 + header_length


def decode_layer(spec: PVQSpec, shape, count: int, indices: bytes, scales: bytes, codebook: bytes,
                 index_coding: str = "fixed") -> QuantizedMatrix:
    """Inverse of `layer_payload`: the QuantizedMatrix of `shape` with `count` groups."""
    python_ints = not fits_uint64(spec.group_size, spec.pulses)
    if index_coding == "mixed_radix":
        indices = unpack_mixed_radix(indices, spec.num_codewords, count)
        indices = np.array(indices, dtype=object if python_ints else np.uint64)
    else:
        indices = unpack_bits(indices, spec.index_bits, count, as_python_ints=python_ints)
    codewords = decode_batch(indices, spec.group_size, spec.pulses)
    codes = unpack_bits(scales, spec.scale_bits, count).astype(np.uint16)
    return QuantizedMatrix(spec, tuple(shape), codewords, codes, np.frombuffer(codebook, "<f4").astype(np.float32))


def load_checkpoint(path: str) -> dict[str, QuantizedMatrix]:
    """Read a `.pvq` file back into QuantizedMatrix layers (codewords decoded from indices)."""
    header, data, offset = _read(path)
    layers = {}
    for entry in header["layers"]:
        spec = PVQSpec(entry["group_size"], entry["pulses"], entry["scale_bits"], entry["rotate"], entry["seed"])
        chunks = []
        for size in entry["bytes"]:
            chunks.append(data[offset : offset + size])
            offset += size
        layers[entry["name"]] = decode_layer(spec, entry["shape"], entry["num_groups"], *chunks,
                                             entry["index_coding"])
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} trailing bytes after the last layer")
    return layers


def checkpoint_size_report(path: str) -> dict:
    """File size split into packed codes, codebooks and header, with bits per weight."""
    header, data, payload_start = _read(path)
    weights = sum(e["shape"][0] * e["shape"][1] for e in header["layers"])
    code_bytes = sum(e["bytes"][0] + e["bytes"][1] for e in header["layers"])
    codebook_bytes = sum(e["bytes"][2] for e in header["layers"])
    formula_bits = sum(e["num_groups"] * (e["index_bits"] + e["scale_bits"]) for e in header["layers"])
    ideal_bits = sum(
        e["num_groups"] * (math.log2(num_codewords(e["group_size"], e["pulses"])) + e["scale_bits"]) for e in header["layers"]
    )
    return {
        "file_bytes": len(data),
        "header_bytes": payload_start,
        "code_bytes": code_bytes,
        "codebook_bytes": codebook_bytes,
        "weights": weights,
        "formula_bits_per_weight": formula_bits / weights,
        "log2N_bits_per_weight": ideal_bits / weights,
        "code_bits_per_weight": 8 * code_bytes / weights,
        "file_bits_per_weight": 8 * len(data) / weights,
    }

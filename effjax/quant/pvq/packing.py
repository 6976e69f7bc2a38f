"""PVQ checkpoint format: bit-packed codeword indices and gain codes, codebooks, metadata.

Layout of a `.pvq` file (all integers little-endian):

    b"PVQ1" | uint32 header length | header (UTF-8 JSON) | layer payloads, in header order

A layer payload is three byte strings: the Fischer indices (`index_bits` each, MSB first,
concatenated, zero-padded to a byte), the gain codes (`scale_bits` each, same packing) and
the gain codebook (2^scale_bits float32). The header lists each layer's name, shape,
PVQSpec, group count and byte sizes. So a layer costs exactly
ceil(groups * index_bits / 8) + ceil(groups * scale_bits / 8) + 4 * 2^scale_bits bytes,
i.e. the reported (ceil(log2 N(L, K)) + b_s) / L bits per weight plus the codebook and
byte padding; `checkpoint_size_report` itemizes this. Loading decodes the indices
(Fischer, `jax_codec.decode_batch`) and `weights.dequantize_matrix` rebuilds the kernels
bit for bit.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from effjax.quant.pvq.counting import fits_uint64
from effjax.quant.pvq.jax_codec import decode_batch, encode_batch
from effjax.quant.pvq.weights import PVQSpec, QuantizedMatrix

MAGIC = b"PVQ1"
FORMAT_VERSION = 1


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


def _layer_payload(quantized: QuantizedMatrix) -> tuple[bytes, bytes, bytes]:
    spec = quantized.spec
    indices = encode_batch(quantized.codewords, spec.pulses)
    return (
        pack_bits(indices, spec.index_bits),
        pack_bits(quantized.scale_codes.astype(np.uint64), spec.scale_bits),
        quantized.scale_codebook.astype("<f4").tobytes(),
    )


def save_checkpoint(path: str, layers: dict[str, QuantizedMatrix]) -> dict:
    """Write layers to `path`; returns `checkpoint_size_report` of what was written."""
    entries, payloads = [], []
    for name, quantized in layers.items():
        indices, scales, codebook = _layer_payload(quantized)
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


def load_checkpoint(path: str) -> dict[str, QuantizedMatrix]:
    """Read a `.pvq` file back into QuantizedMatrix layers (codewords decoded from indices)."""
    header, data, offset = _read(path)
    layers = {}
    for entry in header["layers"]:
        spec = PVQSpec(entry["group_size"], entry["pulses"], entry["scale_bits"], entry["rotate"], entry["seed"])
        sizes = entry["bytes"]
        chunks = []
        for size in sizes:
            chunks.append(data[offset : offset + size])
            offset += size
        count = entry["num_groups"]
        python_ints = not fits_uint64(spec.group_size, spec.pulses)
        indices = unpack_bits(chunks[0], spec.index_bits, count, as_python_ints=python_ints)
        codewords = decode_batch(indices, spec.group_size, spec.pulses)
        codes = unpack_bits(chunks[1], spec.scale_bits, count).astype(np.uint16)
        codebook = np.frombuffer(chunks[2], "<f4").astype(np.float32)
        layers[entry["name"]] = QuantizedMatrix(spec, tuple(entry["shape"]), codewords, codes, codebook)
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
    return {
        "file_bytes": len(data),
        "header_bytes": payload_start,
        "code_bytes": code_bytes,
        "codebook_bytes": codebook_bytes,
        "weights": weights,
        "formula_bits_per_weight": formula_bits / weights,
        "code_bits_per_weight": 8 * code_bytes / weights,
        "file_bits_per_weight": 8 * len(data) / weights,
    }

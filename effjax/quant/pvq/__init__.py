"""Pyramid Vector Quantization (PVQ) of weights: codec, weight quantizer, GPTQ-PVQ, packing, PTQ.

Fischer (1986) pyramid codebook and enumeration; van der Ouderaa et al. (2024),
"Pyramid Vector Quantization for LLMs" (gain-shape groups, scale quantization, Hadamard
rotation, Hessian-aware quantization); GPTQ (Frantar et al. 2023) error propagation.

Modules: counting (N(L, K)), enumeration (exact encode/decode), search (reference search),
jax_codec (vectorized search/encode/decode), weights (groups, gains, rotation, RTN baseline),
gptq (Hessian-aware PVQ), packing (checkpoint format), ptq (quantize a Flax parameter tree).
"""

from __future__ import annotations

from effjax.quant.pvq.counting import fits_uint64, index_bits, num_codewords, shape_bits_per_weight
from effjax.quant.pvq.enumeration import decode, encode
from effjax.quant.pvq.gptq import gptq_quantize_matrix, input_hessian
from effjax.quant.pvq.jax_codec import decode_batch, encode_batch, search_batch
from effjax.quant.pvq.packing import checkpoint_size_report, load_checkpoint, save_checkpoint
from effjax.quant.pvq.ptq import dequantize_into, quantize_params, quantize_tree
from effjax.quant.pvq.reference_search import brute_force_search, correlation_objective, search_reference
from effjax.quant.pvq.weights import PVQSpec, QuantizedMatrix, dequantize_matrix, quantize_matrix, rtn_quantize, sqnr_db

search = search_batch  # codeword(s) of P(L, K) nearest in angle to x ([L] or [..., L]): maximizes (x.y)^2/(y.y)


__all__ = [
    "PVQSpec",
    "QuantizedMatrix",
    "brute_force_search",
    "checkpoint_size_report",
    "correlation_objective",
    "decode",
    "decode_batch",
    "dequantize_into",
    "dequantize_matrix",
    "encode",
    "encode_batch",
    "fits_uint64",
    "gptq_quantize_matrix",
    "index_bits",
    "input_hessian",
    "load_checkpoint",
    "num_codewords",
    "quantize_matrix",
    "quantize_params",
    "quantize_tree",
    "rtn_quantize",
    "save_checkpoint",
    "search",
    "search_batch",
    "search_reference",
    "shape_bits_per_weight",
    "sqnr_db",
]

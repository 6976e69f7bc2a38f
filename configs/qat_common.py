"""Shared pieces of the QAT configs (`configs/qat_digits.py`, `configs/qat_shapes.py`).

`config.quant` (`effjax.config.base.quant_section`) holds the bits of every layer group and how to
quantize; the fields are read by `effjax.quant.aqt_config.provider_from_config`. Variants are
comma-separated: `bits=4` (body weights and activations; `float`, 8, 4),
`width=32` (hidden_dim; mlp_dim = 2 x width, decoder_dim = width), `tiny`.
"""

from __future__ import annotations

import ml_collections

from effjax.config.base import quant_section  # noqa: F401  (the QAT configs' section)
from effjax.config.variants import parse_arg

BITS = {"float": None, "8": 8, "4": 4}


def parse_variant(arg: str | None, file: str) -> dict:
    """'bits=4,width=32,tiny' -> {'bits': 4, 'width': 32, 'tiny': True}."""
    v = parse_arg(arg, file, bits=("4", "8", "float"), width=int, tiny=False)
    if v.width is not None and (v.width <= 0 or v.width % 4):
        raise ValueError(f"{file}: width={v.width}: must be a positive multiple of 4")
    return {"bits": BITS[v.bits], "width": v.width, "tiny": v.tiny}


def apply_width(c: ml_collections.ConfigDict, width: int | None) -> None:
    if width is not None:
        c.model.hidden_dim = width
        c.model.mlp_dim = 2 * width
        c.model.decoder_dim = width

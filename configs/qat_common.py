"""Shared pieces of the QAT configs (`configs/qat_digits.py`, `configs/qat_shapes.py`).

`config.quant` holds the bits of every layer group and how to quantize; the
fields are read by `effjax.quant.aqt_config.provider_from_config`. Variants are
comma-separated: `bits=4` (body weights and activations; `float`, 8, 4),
`width=32` (hidden_dim; mlp_dim = 2 x width, decoder_dim = width), `tiny`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

BITS = {"float": None, "8": 8, "4": 4}


def quant_section(bits) -> ml_collections.ConfigDict:
    q = ml_collections.ConfigDict()
    q.backend = "aqt"  # aqt | qwix: the library that quantizes every dot_general
    q.weight_bits = config_dict.placeholder(int)  # body weight bits (4 or 8); None keeps the model float
    q.activation_bits = config_dict.placeholder(int)  # body activation bits (4 or 8); None keeps activations float
    q.first_last_bits = 8  # bits of the patch embedding and the task heads (paper: 8)
    q.activation_calibration = "absmax"  # absmax | absmean (per-token bound activation_clip_scale * mean|x|)
    q.activation_clip_scale = 3.0  # absmean multiplier (paper: 3 * mean|x|)
    q.bwd_bits = config_dict.placeholder(int)  # bits of the backward matmuls; None keeps gradients float
    q.rounding = "nearest"  # nearest | stochastic (of quantized gradients; needs bwd_bits)
    q.weight_bits = bits
    q.activation_bits = bits
    return q


def parse_variant(arg: str | None, file: str) -> dict:
    """'bits=4,width=32,tiny' -> {'bits': 4, 'width': 32, 'tiny': True}."""
    out = {"bits": 4, "width": None, "tiny": False}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        if key == "tiny" and not value:
            out["tiny"] = True
        elif key == "bits" and value in BITS:
            out["bits"] = BITS[value]
        elif key == "width" and value.isdigit() and int(value) % 4 == 0 and int(value) > 0:
            out["width"] = int(value)
        else:
            raise ValueError(f"{file}: bad variant {part!r}; allowed: bits=float|8|4, width=<multiple of 4>, tiny")
    return out


def apply_width(c: ml_collections.ConfigDict, width: int | None) -> None:
    if width is not None:
        c.model.hidden_dim = width
        c.model.mlp_dim = 2 * width
        c.model.decoder_dim = width

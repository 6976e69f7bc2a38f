"""A supernet wider than the configurations it serves (`config.model.width_overprovision`).

A slimmable supernet of factor f has f x the heads, token width, MLP width and decoder width of
the largest configuration it serves; its width menu is the served menu divided by f, plus 1.0 (the
whole wide network, the sandwich's max configuration, not served). A served configuration of
widths w (fractions of the served dims) is the supernet configuration of widths w / f: the same
integer heads, token, MLP and decoder widths (`effjax.subnet.shapes`), which `served_subnet` checks.
The MoE experts' hidden width is not slimmed by the width knobs, so it stays the served one.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from effjax.subnet.config import SubnetConfig
from effjax.subnet.shapes import decoder_width, encoder_widths

WIDENED = ("num_heads", "hidden_dim", "mlp_dim", "decoder_dim")  # the config.model fields multiplied by f


def _factor(value) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"model.width_overprovision={value!r}: must be an integer >= 1")
    return int(value)


def widen(model_config, factor) -> None:
    """Scales `model_config` (a config.model section, served dims in place) to an f-times wider supernet."""
    f = _factor(factor)
    if model_config.width_overprovision != 1:
        raise ValueError(f"model.width_overprovision={model_config.width_overprovision}: already widened")
    served = sorted(float(w) for w in model_config.width_menu)
    for name in WIDENED:
        setattr(model_config, name, int(getattr(model_config, name)) * f)
    model_config.width_menu = tuple(sorted({w / f for w in served} | {1.0}))
    model_config.width_overprovision = f


def served_model(model_config) -> SimpleNamespace:
    """The dims (the WIDENED fields) of the largest configuration the supernet serves."""
    f = _factor(model_config.width_overprovision)
    return SimpleNamespace(**{name: int(getattr(model_config, name)) // f for name in WIDENED})


def _dims(model, subnet: SubnetConfig, tasks) -> tuple:
    encoder = encoder_widths(model.hidden_dim, model.num_heads, model.mlp_dim, subnet.encoder_width)
    return encoder, tuple(decoder_width(model.decoder_dim, subnet.decoder_width(t)) for t in tasks)


def served_subnet(model_config, subnet: SubnetConfig, tasks) -> SubnetConfig:
    """The supernet configuration that serves `subnet` (widths as fractions of the served dims); refuses
    a factor or width whose integer dims would differ from the served ones."""
    f = _factor(model_config.width_overprovision)
    tasks = [getattr(t, "name", t) for t in tasks]
    wide = dataclasses.replace(subnet, encoder_width=subnet.encoder_width / f,
                               decoder_widths=tuple(sorted((t, subnet.decoder_width(t) / f) for t in tasks)))
    want, got = _dims(served_model(model_config), subnet, tasks), _dims(model_config, wide, tasks)
    if want != got:
        raise ValueError(f"width_overprovision={f}: {subnet} has dims {want} served, {got} in the supernet")
    return wide

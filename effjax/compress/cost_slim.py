"""Active widths and exact cost of a slimmable multi-task ViT subnet.

Slimmable networks (Yu et al., ICLR 2019; Universally Slimmable Networks, ICCV
2019) run a width multiplier w as the prefix slice of every max-width kernel, with
channels rounded to a hardware-friendly multiple. This module owns that rounding
(`make_divisible`, `slim_widths`), so the model (`effjax.models.slim_vit`), the
controller (`effjax.compress.control`) and the cost model all resolve a
`SubnetConfig` to the same integer widths.

What a width multiplier slims:
  - encoder width w_e: the number of attention heads h(w_e) = round(w_e * H)
    (head size fixed), hence the token width d = h * head_dim (the patch embedding
    output, class/position embeddings, every LayerNorm and block input/output), and
    the MLP hidden width make_divisible(w_e * M, 8);
  - decoder width w_t of task t: the head's hidden width make_divisible(w_t * D_dec, 8),
    and, where the model has task decoder blocks (`decoder_blocks`), their attention heads
    and MLP width exactly as an encoder of width w_t would have them (head size fixed; the
    blocks run on the encoder's token width).

The FLOPs are `total_cost` (effjax.compress.cost) of per-layer `LayerCost`s at those
widths: the same counting rules as `vit_layers`, so at full width the two agree.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from effjax.compress.cost import Cost, LayerCost, head_options, total_cost, vit_layers
from effjax.compress.subnet import SubnetConfig
from effjax.data.specs import TaskSpec

CHANNEL_DIVISOR = 8  # MLP and decoder widths are multiples of this (or the full width when it is smaller)
WIDTH_KNOBS = ("encoder_width", "decoder_widths")  # the SubnetConfig fields a slimmable model reads


def make_divisible(value: float, divisor: int, maximum: int) -> int:
    """`value` rounded to the nearest multiple of `divisor`, within [divisor, maximum].

    As in MobileNet's `_make_divisible`, rounding down may not lose more than 10%.
    A maximum below the divisor (a tiny layer) is returned as is at full width.
    """
    if divisor <= 0 or maximum <= 0:
        raise ValueError(f"make_divisible: divisor={divisor} and maximum={maximum} must be positive")
    if maximum < divisor:
        return maximum if value >= maximum else max(1, min(maximum, int(round(value))))
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return min(rounded, maximum)


@dataclasses.dataclass(frozen=True)
class SlimWidths:
    """Integer widths of one subnet."""

    heads: int  # active attention heads
    head_dim: int  # fixed per-head width
    hidden: int  # token width = heads * head_dim
    mlp: int  # MLP hidden width
    decoders: tuple[tuple[str, int], ...]  # (task, head hidden width)
    decoder_blocks: tuple[tuple[str, int, int], ...] = ()  # (task, decoder-block heads, decoder-block MLP width)

    def decoder(self, task: str) -> int:
        return dict(self.decoders)[task]


def check_width_subnet(subnet: SubnetConfig, tasks: Sequence[TaskSpec], model_name: str = "slim_vit") -> None:
    """A slimmable model owns only the width knobs: anything else must be at its default."""
    defaults = SubnetConfig()
    others = {f.name: getattr(subnet, f.name) for f in dataclasses.fields(subnet)
              if f.name not in WIDTH_KNOBS and getattr(subnet, f.name) != getattr(defaults, f.name)}
    if others:
        raise ValueError(f"model {model_name} owns only {list(WIDTH_KNOBS)}; got non-default {others}")
    names = {t.name for t in tasks}
    unknown = [name for name, _ in subnet.decoder_widths if name not in names]
    if unknown:
        raise ValueError(f"SubnetConfig.decoder_widths: unknown tasks {unknown}; tasks: {sorted(names)}")


def encoder_widths(hidden_dim: int, num_heads: int, mlp_dim: int, width: float) -> tuple[int, int, int]:
    """(heads, token width, MLP width) of encoder width multiplier `width`."""
    if not 0 < width <= 1:
        raise ValueError(f"encoder_width={width!r}: must be in (0, 1]")
    if hidden_dim % num_heads:
        raise ValueError(f"num_heads={num_heads}: must divide hidden_dim={hidden_dim}")
    head_dim = hidden_dim // num_heads
    heads = min(num_heads, max(1, int(round(width * num_heads))))
    return heads, heads * head_dim, make_divisible(width * mlp_dim, CHANNEL_DIVISOR, mlp_dim)


def decoder_width(decoder_dim: int, width: float) -> int:
    if not 0 < width <= 1:
        raise ValueError(f"decoder width={width!r}: must be in (0, 1]")
    return make_divisible(width * decoder_dim, CHANNEL_DIVISOR, decoder_dim)


def slim_widths(model_config, tasks: Sequence[TaskSpec], subnet: Optional[SubnetConfig] = None) -> SlimWidths:
    """Integer widths of `subnet` for a model config with hidden_dim, num_heads, mlp_dim, decoder_dim."""
    subnet = subnet or SubnetConfig()
    check_width_subnet(subnet, tasks)
    heads, hidden, mlp = encoder_widths(model_config.hidden_dim, model_config.num_heads, model_config.mlp_dim,
                                        subnet.encoder_width)
    decoders = tuple((t.name, decoder_width(model_config.decoder_dim, subnet.decoder_width(t.name))) for t in tasks)
    blocks = []
    for t in tasks:
        block_heads, _, block_mlp = encoder_widths(model_config.hidden_dim, model_config.num_heads, model_config.mlp_dim,
                                                   subnet.decoder_width(t.name))
        blocks.append((t.name, block_heads, block_mlp))
    return SlimWidths(heads, model_config.hidden_dim // model_config.num_heads, hidden, mlp, decoders, tuple(blocks))


def slim_vit_layers(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec],
                    subnet: Optional[SubnetConfig] = None) -> list[LayerCost]:
    """Per-layer MACs, active parameters and element-wise FLOPs of the sliced subnet, per example."""
    widths = slim_widths(model_config, tasks, subnet)
    return vit_layers(model_config, image_shape, tasks, hidden=widths.hidden, heads=widths.heads, mlp=widths.mlp,
                      decoders=dict(widths.decoders), **head_options(model_config),
                      decoder_block_widths={name: (h, m) for name, h, m in widths.decoder_blocks})


def slim_vit_cost(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec],
                  subnet: Optional[SubnetConfig] = None) -> Cost:
    """FLOPs / active params / bits / BOPs of one width config (the shared `total_cost` rules)."""
    return total_cost(slim_vit_layers(model_config, image_shape, tasks, subnet), subnet)

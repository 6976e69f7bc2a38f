"""Shape rules of a subnet configuration: the integer sizes every knob resolves to.

The bottom layer that the models and the cost model both import, so that a
`SubnetConfig` means the same integer widths, kept keys and MoE blocks everywhere:

  - widths (Slimmable networks, Yu et al. ICLR 2019; Universally Slimmable Networks,
    ICCV 2019): encoder width w_e keeps h(w_e) = round(w_e * H) heads of fixed size,
    hence the token width h * head_dim, and an MLP width make_divisible(w_e * M, 8);
    decoder width w_t keeps make_divisible(w_t * D_dec, 8) head channels and, in task
    decoder blocks, the heads / MLP width an encoder of width w_t would have;
  - kept keys (Sparsifiner, Wei et al. CVPR 2023): k = ceil(rho * n) keys per query row;
    predictor rank M = N // r;
  - kept tokens at a token-pruning layer: ceil(ratio * patches);
  - MoE blocks: the last block of every period of `moe_every` blocks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Optional, Sequence

from effjax.subnet.config import SubnetConfig

if TYPE_CHECKING:
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


def check_width_subnet(subnet: SubnetConfig, tasks: Sequence[TaskSpec]) -> None:
    """A slimmable model owns only the width knobs: anything else must be at its default."""
    others = subnet.non_default(WIDTH_KNOBS)
    if others:
        raise ValueError(f"model slim_vit owns only {list(WIDTH_KNOBS)}; got non-default {others}")
    subnet.check_tasks({t.name for t in tasks})


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


def kept_key_count(keep_ratio: float, num_tokens: int) -> int:
    """k = ceil(rho n) keys kept per query row, at least 1 and at most n."""
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio={keep_ratio!r}: must be in (0, 1]")
    return max(1, min(num_tokens, math.ceil(keep_ratio * num_tokens - 1e-9)))


def kept_token_count(keep_ratio: float, num_patches: int) -> int:
    """Patch tokens kept at a token-pruning layer: ceil(ratio x current patches), at least 1."""
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"token_keep_ratio={keep_ratio!r}: must be in (0, 1]")
    return max(1, min(num_patches, math.ceil(keep_ratio * num_patches - 1e-9)))


def predictor_rank(num_tokens: int, token_reduction: int) -> int:
    """M, the predictor's token-axis rank: N // r, at least 1."""
    if token_reduction < 1:
        raise ValueError(f"model.predictor_token_reduction={token_reduction!r}: must be >= 1")
    return max(1, num_tokens // token_reduction)


def moe_block_indices(num_layers: int, moe_every: int) -> tuple[int, ...]:
    """Blocks whose MLP is a MoE layer: the last block of every period of `moe_every` blocks."""
    if moe_every < 1:
        raise ValueError(f"moe_every={moe_every}: must be >= 1")
    return tuple(i for i in range(num_layers) if i % moe_every == moe_every - 1)

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

from typing import Optional, Sequence

from effjax.compress.cost import Cost, LayerCost, head_options, total_cost, vit_layers
from effjax.data.specs import TaskSpec
from effjax.subnet import SubnetConfig, slim_widths


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

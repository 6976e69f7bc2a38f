"""Cost of a quantized model as it actually runs: the shared cost with float attention einsums.

The shared `total_cost` prices every layer with `SubnetConfig.bits_for(group)`
(weights x bits; BOPs = MACs x weight bits x activation bits, Abdolrashidi et al.,
2021, Sec. 3), including the two activation x activation einsums of attention
(logits and mixing) at activation bits squared. Those einsums do not go through
the `dot_general` hook of the layers, so AQT leaves them float (32 x 32 bits).
`quantized_vit_cost` prices them that way unless the caller says they are
quantized; everything else is the shared `total_cost` unchanged.
"""

from __future__ import annotations

from typing import Optional, Sequence

from effjax.compress.cost import Cost, LayerCost, total_cost, vit_layers
from effjax.compress.subnet import SubnetConfig


def add_costs(a: Cost, b: Cost) -> Cost:
    return Cost(flops=a.flops + b.flops, params=a.params + b.params,
                weight_bits=a.weight_bits + b.weight_bits, bops=a.bops + b.bops)


def quantized_cost(layers: Sequence[LayerCost], subnet: Optional[SubnetConfig] = None,
                   einsums_quantized: bool = False) -> Cost:
    """`total_cost`, except activation-only einsums stay float unless `einsums_quantized`."""
    if einsums_quantized:
        return total_cost(layers, subnet)
    matmuls = [layer for layer in layers if not layer.activation_only]
    einsums = [layer for layer in layers if layer.activation_only]
    return add_costs(total_cost(matmuls, subnet), total_cost(einsums, SubnetConfig()))


def quantized_vit_cost(model_config, image_shape, tasks, subnet: Optional[SubnetConfig] = None,
                       einsums_quantized: bool = False) -> Cost:
    return quantized_cost(vit_layers(model_config, image_shape, tasks), subnet, einsums_quantized)

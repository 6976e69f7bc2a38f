"""Active FLOPs and parameters of the multi-task MoE ViT (M3ViT), from the shared cost model.

Starts from `cost.vit_layers` and, in every MoE block, replaces the dense MLP by
  - the router: S x d x E MACs, (routers x d x E) parameters (group "router");
  - the experts: k x 2 x S x d x m_e MACs (k experts per token are *active*),
    all E experts' parameters (group "expert").
With one router per task the encoder runs once per task from the first MoE block on
(the blocks before it and its attention half are shared); `task=` prices single-task inference, which runs
one pass and one head. For top-p routing k is data dependent: pass the measured
mean `experts_per_token`. Dispatch/combine bookkeeping (one-hot einsums, gathers) is
implementation overhead, not counted here; tools/bench_moe_dispatch.py measures it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from effjax.compress.cost import GELU_FLOPS_PER_ELEMENT, Cost, LayerCost, total_cost, vit_layers
from effjax.data.specs import TaskSpec
from effjax.models.moe_vit import moe_fields
from effjax.subnet import SubnetConfig, moe_block_indices


def active_experts_per_token(model_config, subnet: Optional[SubnetConfig], experts_per_token: Optional[float]) -> float:
    subnet = subnet or SubnetConfig()
    if experts_per_token is not None:
        return float(experts_per_token)
    if subnet.moe_top_p:
        raise ValueError("experts_per_token: required with top-p routing (subnet.moe_top_p > 0); pass the measured mean")
    return float(subnet.moe_top_k or moe_fields(model_config)["top_k"])


def moe_vit_layers(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec],
                   subnet: Optional[SubnetConfig] = None, task: Optional[str] = None,
                   experts_per_token: Optional[float] = None) -> list[LayerCost]:
    names = [t.name for t in tasks]
    if task is not None and task not in names:
        raise ValueError(f"task={task!r}: unknown task; allowed: {names}")
    heads = [t for t in tasks if task is None or t.name == task]
    layers = vit_layers(model_config, image_shape, heads)
    h, w, _ = image_shape
    p = model_config.patch_size
    n = (h // p) * (w // p) + 1
    d = model_config.hidden_dim
    fields = moe_fields(model_config)
    e, m = int(fields["num_experts"]), int(fields["expert_dim"])
    per_task = fields["task_routing"] == "per_task"
    routers = len(tasks) if per_task else 1
    k = active_experts_per_token(model_config, subnet, experts_per_token)
    moe_blocks = moe_block_indices(model_config.num_layers, int(fields["moe_every"]))

    replaced: list[LayerCost] = []
    for layer in layers:
        block = layer.name.split("/")[0]
        if layer.name.endswith("/mlp") and int(block[len("block"):]) in moe_blocks:
            replaced += [
                LayerCost(f"{block}/router", "router", n * d * e, routers * d * e),
                LayerCost(f"{block}/experts", "expert", round(k * 2 * n * d * m), e * (2 * d * m + m + d),
                          elementwise_flops=round(k * n * m * GELU_FLOPS_PER_ELEMENT)),
            ]
        else:
            replaced.append(layer)
    if not moe_blocks or not per_task or task is not None:
        return replaced

    first = moe_blocks[0]

    def repeated(layer: LayerCost) -> bool:  # the first MoE block's attention half is shared by the passes
        block = layer.name.split("/")[0]
        if layer.name == "ln_final" or layer.name in (f"block{first}/router", f"block{first}/experts"):
            return True
        return block.startswith("block") and int(block[len("block"):]) > first

    extra = [dataclasses.replace(layer, name=f"pass_{t}/{layer.name}", params=0)
             for t in names[1:] for layer in replaced if repeated(layer)]
    return replaced + extra


def moe_vit_cost(model_config, image_shape, tasks, subnet: Optional[SubnetConfig] = None, task: Optional[str] = None,
                 experts_per_token: Optional[float] = None) -> Cost:
    layers = moe_vit_layers(model_config, image_shape, tasks, subnet, task, experts_per_token)
    return total_cost(layers, subnet)


def encoder_flops(layers: Sequence[LayerCost]) -> float:
    """FLOPs of everything but the task heads."""
    return sum(2 * layer.macs + layer.elementwise_flops for layer in layers if layer.group != "head")

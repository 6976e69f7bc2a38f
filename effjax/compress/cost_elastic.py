"""Exact cost of one configuration of any model effjax builds (`effjax.models.registry`): widths,
keep ratio, token keep ratio, experts and bits together, for every preset of the elastic model
(mt_vit, slim_vit, sparse_vit, super_vit) and for its M3ViT variant (moe_vit). One walker.

Built from the shared counting rules (`effjax.compress.cost`) and the per-feature pieces:
  - widths (Yu & Huang 2019; Aich et al. 2023): a width multiplier runs the prefix slice of
    every max-width kernel; `effjax.subnet.slim_widths` resolves a `SubnetConfig` to the
    integer widths the model runs (heads at a fixed head size, hence the token width; MLP
    and decoder widths rounded to multiples of 8; task decoder blocks as an encoder of the
    decoder width), so model, controller and cost model agree. At full width the cost
    equals `vit_layers`' plain ViT;
  - Sparsifiner attention in `model.sparse_layers`: at keep ratio rho < 1 the logits and
    mixing einsums cover n + (n - 1) ceil(rho n) pairs, the kept key / value rows are
    gathered, and the connectivity predictor's work is added (`cost_sparse`); at rho = 1
    the layer runs dense and the predictor only contributes parameters (also under
    `mask_scores="random"`, whose random scores replace the predictor's work);
  - token pruning (`model.token_pruning_layers`): every block after a pruning block runs on the
    class token and ceil(ratio x patches) patch tokens (`tokens_per_block`);
  - MoE blocks (every `model.moe_every`-th). One convention: **priced as executed** by the
    dispatch. The router (n d E MACs per router pass) and its softmax; the expert rows the
    dispatch runs through the GELU MLP (2 d m MACs each): E buffers of C =
    `expert_capacity(n, E, k, capacity_factor)` slots for einsum / gather (padding slots compute
    too; dropless top-p: C = n), n k routed rows for sorted / ragged, E n for dense; and the
    gate-weighted combine (n k d MACs). Parameters: all experts (the stored model), the router
    rows of the active width, one router per task under M3ViT's per-task routing. The *active*
    count (the k experts a token uses, or the measured mean under top-p) is available as
    `experts_per_token=`, which prices n x experts_per_token expert rows instead;
  - M3ViT's per-task routing (moe_vit, `task_routing="per_task"`): the encoder runs once per task
    from the first MoE block's MLP on; `task=` prices single-task inference (one pass, one head);
  - bits: `SubnetConfig.bits_for` per layer group (`total_cost`); the export's exact size in
    bits is `effjax.compress.export.total_bits` of its plan.
FLOPs are per example of the evaluation (gathered) path; tests hold them within 10% of XLA's
cost analysis of the compiled model for every preset.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from effjax.compress.cost import (GELU_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT, Cost, LayerCost,
                                  attention_pair_layers, total_cost, vit_layers)
from effjax.compress.cost_sparse import attention_core_layers, predictor_layers
from effjax.models.block_sparse import block_counts, block_sparse_flops, kept_block_count
from effjax.models.elastic_vit import elastic_fields
from effjax.models.moe import MoeMlp, expert_capacity  # the model's own capacity rule
from effjax.models.moe_vit import moe_fields
from effjax.models.registry import model_entry
from effjax.data.specs import TaskSpec
from effjax.subnet import SubnetConfig, kept_key_count, kept_token_count, moe_block_indices, slim_widths

# XLA's CPU cost analysis counts a row gather as one FLOP per element moved plus this
# much index arithmetic per row (measured on jax 0.10.2, head sizes 16 and 32).
GATHER_FLOPS_PER_ROW = 6


def _block_index(name: str) -> Optional[int]:
    head = name.split("/")[0]
    return int(head[len("block"):]) if head.startswith("block") and "/" in name else None


def tokens_per_block(model_config, num_patches: int, subnet: SubnetConfig) -> list[int]:
    """Tokens (class token included) each encoder block sees: all of them, fewer after a token-pruning block."""
    pruning = set(elastic_fields(model_config)["token_pruning_layers"])
    patches, counts = num_patches, []
    for i in range(model_config.num_layers):
        counts.append(patches + 1)
        if i in pruning and subnet.token_keep_ratio < 1:
            patches = kept_token_count(subnet.token_keep_ratio, patches)
    return counts


def executed_expert_rows(tokens: int, moe: dict, top_k: int, top_p: float) -> int:
    """Rows one MoE layer's experts compute for `tokens` tokens under the dispatch `moe["dispatch"]`."""
    e, dispatch = moe["num_experts"], moe["dispatch"]
    if dispatch == "dense":
        return e * tokens
    if dispatch in ("sorted", "ragged"):
        if top_p:
            raise ValueError(f"experts_per_token: required with top-p routing under dispatch={dispatch!r}; pass the "
                             "measured mean")
        return tokens * top_k
    capacity = tokens if top_p else expert_capacity(tokens, e, top_k, moe["capacity_factor"])
    return e * capacity


def moe_block_layers(name: str, tokens: int, d: int, moe: dict, routers: int, top_k: int, top_p: float,
                     experts_per_token: Optional[float]) -> list[LayerCost]:
    """Router, experts and combine of one MoE MLP on `tokens` tokens of width `d` (the convention above)."""
    e, m = moe["num_experts"], moe["expert_dim"]
    if experts_per_token is not None:
        rows, routed = experts_per_token * tokens, experts_per_token
    else:
        rows, routed = executed_expert_rows(tokens, moe, top_k, top_p), (e if top_p else top_k)
    return [
        LayerCost(f"{name}/router", "router", tokens * d * e, routers * d * e,
                  elementwise_flops=tokens * e * SOFTMAX_FLOPS_PER_ELEMENT),
        LayerCost(f"{name}/experts", "expert", round(rows * 2 * d * m), e * (2 * d * m + m + d),
                  elementwise_flops=round(rows * m * GELU_FLOPS_PER_ELEMENT)),
        LayerCost(f"{name}/combine", "expert", round(tokens * routed * d), 0, activation_only=True),
    ]


def elastic_layers(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec],
                   subnet: Optional[SubnetConfig] = None, task: Optional[str] = None,
                   experts_per_token: Optional[float] = None) -> list[LayerCost]:
    """Per-layer MACs, parameters and element-wise FLOPs of one configuration, per example; `task`: single-task
    inference (that head only); `experts_per_token`: price MoE experts as active rather than executed."""
    subnet = subnet or SubnetConfig()
    names = [t.name for t in tasks]
    if task is not None and task not in names:
        raise ValueError(f"task={task!r}: unknown task; allowed: {names}")
    fields = elastic_fields(model_config)
    moe = moe_fields(model_config)
    is_moe_vit = model_config.name == "moe_vit"
    if not is_moe_vit:  # the elastic model's MoE MLPs run MoeMlp's default dispatch
        moe["dispatch"] = MoeMlp.__dataclass_fields__["dispatch"].default
    per_task_passes = is_moe_vit and moe["task_routing"] == "per_task"
    widths = slim_widths(model_config, tasks, SubnetConfig(encoder_width=subnet.encoder_width,
                                                           decoder_widths=subnet.decoder_widths))
    h, w, _ = image_shape
    n = (h // model_config.patch_size) * (w // model_config.patch_size) + 1
    d, heads, head_dim = widths.hidden, widths.heads, widths.head_dim
    rho = subnet.attention_keep_ratio
    block = fields["attention_block"]
    sparse_layers = set(fields["sparse_layers"])
    moe_blocks = moe_block_indices(model_config.num_layers, fields["moe_every"]) if fields["moe_every"] else ()
    top_p = subnet.moe_top_p or (moe["top_p"] if is_moe_vit and not subnet.moe_top_k else 0.0)
    k = subnet.moe_top_k or fields["default_top_k"]
    if moe_blocks and not 1 <= k <= moe["num_experts"]:
        raise ValueError(f"SubnetConfig.moe_top_k={k}: must be in [1, model.num_experts={moe['num_experts']}]")
    routers = len(tasks) if per_task_passes else 1
    tokens = tokens_per_block(model_config, n - 1, subnet)

    layers = []
    for layer in vit_layers(model_config, image_shape, [t for t in tasks if task is None or t.name == task],
                            hidden=d, heads=heads, mlp=widths.mlp,
                            decoders={name: dw for name, dw in widths.decoders if task is None or name == task},
                            image_head=fields["image_head"], decoder_blocks=fields["decoder_blocks"],
                            decoder_block_widths={name: (h, m) for name, h, m in widths.decoder_blocks},
                            tokens_per_block=tokens):
        i = _block_index(layer.name)
        if i is None:
            layers.append(layer)
            continue
        t = tokens[i]
        if layer.name.endswith("/attention_logits"):
            sparse = rho < 1 and i in sparse_layers
            if sparse and block:
                layers += block_sparse_core_layers(f"block{i}", t, heads, head_dim, rho, block)
            else:
                layers += attention_core_layers(f"block{i}", t, heads, head_dim, rho, sparse)
            if sparse and not block:  # the gathered path reads each kept key and value row: XLA counts the gathers
                gathered_rows = 2 * heads * (t - 1) * kept_key_count(rho, t)
                layers.append(LayerCost(f"block{i}/attention_gather", "attention", 0, 0,
                                        elementwise_flops=gathered_rows * (head_dim + GATHER_FLOPS_PER_ROW)))
            if i in sparse_layers:
                predictor = predictor_layers(f"block{i}", t, n, heads, head_dim, fields)
                if fields["mask_scores"] == "random":  # the baseline's random scores replace the predictor's work
                    sparse = False
                layers += predictor if sparse else [LayerCost(p.name, p.group, 0, p.params) for p in predictor]
        elif layer.name.endswith("/attention_mix"):
            continue  # priced with the logits above
        elif layer.name.endswith("/mlp") and i in moe_blocks:
            layers += moe_block_layers(f"block{i}", t, d, moe, routers, k, top_p, experts_per_token)
        else:
            layers.append(layer)
    if per_task_passes and moe_blocks and task is None:
        layers += repeated_passes(layers, moe_blocks[0], names[1:])
    return layers


def repeated_passes(layers: Sequence[LayerCost], first_moe: int, other_tasks: Sequence[str]) -> list[LayerCost]:
    """M3ViT's per-task encoder passes: what each task after the first runs again (no new parameters), from the
    first MoE block's MLP (its attention half is shared) to the final LayerNorm."""
    def repeated(layer: LayerCost) -> bool:
        i = _block_index(layer.name)
        if layer.name == "ln_final":
            return True
        if i == first_moe:
            return layer.name.split("/")[1] in ("router", "experts", "combine")
        return i is not None and i > first_moe

    return [dataclasses.replace(layer, name=f"pass_{t}/{layer.name}", params=0)
            for t in other_tasks for layer in layers if repeated(layer)]


def block_sparse_core_layers(name: str, n: int, heads: int, head_dim: int, keep_ratio: float, block: int
                             ) -> list[LayerCost]:
    """Block-sparse attention as computed: every padded query block against its kb whole key blocks, the class
    row dense, and the copies of the kept key / value blocks (`block_sparse.block_sparse_attention`)."""
    pairs = block_sparse_flops(n, head_dim, heads, keep_ratio, block)["block_pairs"] // heads
    nq, _ = block_counts(n, block)
    copied = 2 * heads * nq * kept_block_count(keep_ratio, n, block) * block * head_dim
    return [*attention_pair_layers(name, pairs, heads, heads * head_dim),
            LayerCost(f"{name}/attention_gather", "attention", 0, 0, elementwise_flops=copied)]


def elastic_cost(model_config, image_shape, tasks, subnet: Optional[SubnetConfig] = None, task: Optional[str] = None,
                 experts_per_token: Optional[float] = None) -> Cost:
    """FLOPs / active params / bits / BOPs of one configuration (the shared `total_cost` rules)."""
    return total_cost(elastic_layers(model_config, image_shape, tasks, subnet, task, experts_per_token), subnet)


def model_layers(model_config, image_shape, tasks, subnet: Optional[SubnetConfig] = None, **options
                 ) -> list[LayerCost]:
    """Per-layer costs of a configuration of `config.model.name`: its registered cost function
    (`effjax.models.register_model`), else `elastic_layers`."""
    cost_layers = model_entry(model_config).cost_layers or elastic_layers
    return cost_layers(model_config, image_shape, tasks, subnet, **options)

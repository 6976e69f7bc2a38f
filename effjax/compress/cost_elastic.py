"""Exact cost of one configuration of the elastic model (`effjax.models.elastic_vit`): widths,
keep ratio, token keep ratio, top-k and bits together, for every preset (mt_vit, slim_vit,
sparse_vit, super_vit).

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
  - MoE blocks (every `model.moe_every`-th), priced as executed: the router (n d E MACs) and
    its softmax, E buffers of C = `expert_capacity(n, E, k, capacity_factor)` slots each
    running the GELU MLP (E C 2 d m MACs; padding slots compute too), and the gate-weighted
    combine (n k d MACs). Parameters: all experts (the stored model), the router rows of the
    active width;
  - bits: `SubnetConfig.bits_for` per layer group (`total_cost`); the export's exact size in
    bits is `effjax.compress.export.total_bits` of its plan.
FLOPs are per example of the evaluation (gathered) path; tests hold them within 10% of XLA's
cost analysis of the compiled subnet.
"""

from __future__ import annotations

from typing import Optional, Sequence

from effjax.compress.cost import (GELU_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT, Cost, LayerCost, total_cost,
                                  vit_layers)
from effjax.compress.cost_sparse import attention_core_layers, predictor_layers
from effjax.models.block_sparse import block_counts, block_sparse_flops, kept_block_count
from effjax.models.elastic_vit import elastic_fields
from effjax.models.moe import expert_capacity  # the model's own capacity rule
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


def elastic_layers(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec],
                     subnet: Optional[SubnetConfig] = None) -> list[LayerCost]:
    """Per-layer MACs, parameters and element-wise FLOPs of one configuration, per example."""
    subnet = subnet or SubnetConfig()
    fields = elastic_fields(model_config)
    widths = slim_widths(model_config, tasks, SubnetConfig(encoder_width=subnet.encoder_width,
                                                           decoder_widths=subnet.decoder_widths))
    h, w, _ = image_shape
    n = (h // model_config.patch_size) * (w // model_config.patch_size) + 1
    d, heads, head_dim = widths.hidden, widths.heads, widths.head_dim
    rho = subnet.attention_keep_ratio
    block = fields["attention_block"]
    sparse_layers = set(fields["sparse_layers"])
    moe_blocks = set(moe_block_indices(model_config.num_layers, fields["moe_every"])) if fields["moe_every"] else set()
    e, m = fields["num_experts"], fields["expert_dim"]
    k = subnet.moe_top_k or fields["default_top_k"]
    if moe_blocks and not 1 <= k <= e:
        raise ValueError(f"SubnetConfig.moe_top_k={k}: must be in [1, model.num_experts={e}]")
    tokens = tokens_per_block(model_config, n - 1, subnet)

    layers = []
    for layer in vit_layers(model_config, image_shape, tasks, hidden=d, heads=heads, mlp=widths.mlp,
                            decoders=dict(widths.decoders), image_head=fields["image_head"],
                            decoder_blocks=fields["decoder_blocks"],
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
            capacity = expert_capacity(t, e, k, fields["capacity_factor"])
            layers += [
                LayerCost(f"block{i}/router", "router", t * d * e, d * e,
                          elementwise_flops=t * e * SOFTMAX_FLOPS_PER_ELEMENT),
                LayerCost(f"block{i}/experts", "expert", e * capacity * 2 * d * m, e * (2 * d * m + m + d),
                          elementwise_flops=e * capacity * m * GELU_FLOPS_PER_ELEMENT),
                LayerCost(f"block{i}/combine", "expert", t * k * d, 0, activation_only=True),
            ]
        else:
            layers.append(layer)
    return layers


def block_sparse_core_layers(name: str, n: int, heads: int, head_dim: int, keep_ratio: float, block: int
                             ) -> list[LayerCost]:
    """Block-sparse attention as computed: every padded query block against its kb whole key blocks, the class
    row dense, and the copies of the kept key / value blocks (`block_sparse.block_sparse_attention`)."""
    pairs = block_sparse_flops(n, head_dim, heads, keep_ratio, block)["block_pairs"] // heads
    nq, _ = block_counts(n, block)
    copied = 2 * heads * nq * kept_block_count(keep_ratio, n, block) * block * head_dim
    d = heads * head_dim
    return [LayerCost(f"{name}/attention_logits", "attention", pairs * d, 0, activation_only=True,
                      elementwise_flops=heads * pairs * SOFTMAX_FLOPS_PER_ELEMENT),
            LayerCost(f"{name}/attention_mix", "attention", pairs * d, 0, activation_only=True),
            LayerCost(f"{name}/attention_gather", "attention", 0, 0, elementwise_flops=copied)]


def elastic_cost(model_config, image_shape, tasks, subnet: Optional[SubnetConfig] = None) -> Cost:
    """FLOPs / active params / bits / BOPs of one configuration (the shared `total_cost` rules)."""
    return total_cost(elastic_layers(model_config, image_shape, tasks, subnet), subnet)

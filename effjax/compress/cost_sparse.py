"""Exact cost of the Sparsifiner ViT (Wei et al., CVPR 2023) for any keep ratio rho.

Built on the shared `LayerCost` / `total_cost` of `cost.py`: `sparse_vit_layers`
lists every layer of `effjax.models.sparse_vit.SparseViT` at a subnet config,
with the token count each block really sees (token pruning shrinks it) and the
attention work of the path used at inference (the gathered path):

  per sparse layer with n tokens, k = ceil(rho n) kept keys per query row, H heads of width d_h:
    query-key pairs   n + (n - 1) k                (class-token row dense)
    logits, mixing    pairs x d_h MACs each per head; softmax over the pairs
    predictor         q, k channel reduction      (2n - 1) d_h c   MACs per head (query rows 1..n-1)
                      token-axis projection       n M c
                      coefficient logits          (n - 1) M c      (+ softmax over M)
                      sparse basis product        (n - 1) t n      (t = min(top coefficients, M))

A dense layer costs n^2 d_h per head for logits and for mixing, as in `vit_layers`.
"MHSA FLOPs" (the paper's metric) are the logits, softmax, mixing and predictor
layers, i.e. everything in attention except the q/k/v/out projections, which rho
does not change; `mhsa_flops` sums them. The top-k selections and gathers move
data and are not counted; XLA's cost analysis counts their index arithmetic, so
it reads a few percent higher for sparse configs (5-8% at rho 0.25-0.5 on the
shapes model; equal within 0.4% at rho = 1; test_cost_sparse.py).

The two count helpers here are the single source of truth the model also uses.
"""

from __future__ import annotations

from typing import Optional, Sequence

from effjax.compress.cost import (GELU_FLOPS_PER_ELEMENT, LAYERNORM_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT, Cost,
                                  LayerCost, total_cost)
from effjax.data.specs import TaskSpec
from effjax.subnet import SubnetConfig, kept_key_count, kept_token_count, predictor_rank, sparse_model_fields

# layer-name suffixes that make up the paper's "MHSA FLOPs"
MHSA_CORE_SUFFIXES = ("attention_logits", "attention_mix", "predictor_reduce", "predictor_token_down",
                      "predictor_coefficients", "predictor_basis")


def tokens_per_layer(model_config, num_patches: int, subnet: SubnetConfig) -> list[int]:
    """Token count (class token included) each encoder block sees."""
    pruning = set(sparse_model_fields(model_config)["token_pruning_layers"])
    patches, counts = num_patches, []
    for i in range(model_config.num_layers):
        counts.append(patches + 1)
        if i in pruning and subnet.token_keep_ratio < 1:
            patches = kept_token_count(subnet.token_keep_ratio, patches)
    return counts


def attention_core_layers(name: str, n: int, heads: int, head_dim: int, keep_ratio: float, sparse: bool) -> list[LayerCost]:
    d = heads * head_dim
    pairs = n + (n - 1) * kept_key_count(keep_ratio, n) if sparse else n * n
    return [LayerCost(f"{name}/attention_logits", "attention", pairs * d, 0, activation_only=True,
                      elementwise_flops=heads * pairs * SOFTMAX_FLOPS_PER_ELEMENT),
            LayerCost(f"{name}/attention_mix", "attention", pairs * d, 0, activation_only=True)]


def predictor_layers(name: str, n: int, full_tokens: int, heads: int, head_dim: int, fields: dict) -> list[LayerCost]:
    c = fields["predictor_channels"]
    m = predictor_rank(full_tokens, fields["predictor_token_reduction"])
    top = min(fields["predictor_top_coefficients"], m)
    return [
        # the query reduction runs on rows 1..n-1 only (the class row is dense)
        LayerCost(f"{name}/predictor_reduce", "attention", heads * (2 * n - 1) * head_dim * c, 2 * (head_dim * c + c)),
        LayerCost(f"{name}/predictor_token_down", "attention", heads * n * m * c, full_tokens * m),
        LayerCost(f"{name}/predictor_coefficients", "attention", heads * (n - 1) * m * c, 0, activation_only=True,
                  elementwise_flops=heads * (n - 1) * m * SOFTMAX_FLOPS_PER_ELEMENT),
        LayerCost(f"{name}/predictor_basis", "attention", heads * (n - 1) * top * n, m * full_tokens, activation_only=True),
    ]


def sparse_vit_layers(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec],
                      subnet: Optional[SubnetConfig] = None) -> list[LayerCost]:
    """Every layer of SparseViT at `subnet` (attention_keep_ratio = rho, token_keep_ratio)."""
    subnet = subnet or SubnetConfig()
    fields = sparse_model_fields(model_config)
    h, w, ch = image_shape
    p = model_config.patch_size
    patches = (h // p) * (w // p)
    full = patches + 1
    d, mlp, dec, heads = model_config.hidden_dim, model_config.mlp_dim, model_config.decoder_dim, model_config.num_heads
    head_dim = d // heads
    rho = subnet.attention_keep_ratio
    layers = [LayerCost("patch_embed", "embed", patches * p * p * ch * d, p * p * ch * d + d),
              LayerCost("tokens", "embed", 0, d + full * d)]
    for i, n in enumerate(tokens_per_layer(model_config, patches, subnet)):
        name = f"block{i}"
        sparse = rho < 1 and i in fields["sparse_layers"]
        layers += [LayerCost(f"{name}/ln", "norm", 0, 4 * d, elementwise_flops=2 * n * d * LAYERNORM_FLOPS_PER_ELEMENT),
                   LayerCost(f"{name}/qkv", "attention", 3 * n * d * d, 3 * (d * d + d))]
        layers += attention_core_layers(name, n, heads, head_dim, rho, sparse)
        if fields["mask_scores"] == "predictor":
            # the predictor's parameters exist in every layer; its work only where the layer is sparse
            pred = predictor_layers(name, n, full, heads, head_dim, fields)
            layers += pred if sparse else [LayerCost(x.name, x.group, 0, x.params) for x in pred]
        layers += [LayerCost(f"{name}/out", "attention", n * d * d, d * d + d),
                   LayerCost(f"{name}/mlp", "mlp", 2 * n * d * mlp, 2 * d * mlp + mlp + d,
                             elementwise_flops=n * mlp * GELU_FLOPS_PER_ELEMENT)]
    layers.append(LayerCost("ln_final", "norm", 0, 2 * d, elementwise_flops=full * d * LAYERNORM_FLOPS_PER_ELEMENT))
    for t in tasks:
        rows = patches if t.is_dense else 1
        out = t.out_channels * (p * p if t.is_dense else 1)
        layers.append(LayerCost(f"head_{t.name}", "head", rows * (d * dec + dec * out), 2 * d + d * dec + dec + dec * out + out,
                                elementwise_flops=rows * (d * LAYERNORM_FLOPS_PER_ELEMENT + dec * GELU_FLOPS_PER_ELEMENT)))
    return layers


def sparse_vit_cost(model_config, image_shape, tasks, subnet: Optional[SubnetConfig] = None) -> Cost:
    return total_cost(sparse_vit_layers(model_config, image_shape, tasks, subnet), subnet)


def mhsa_flops(layers: Sequence[LayerCost]) -> float:
    """The paper's MHSA FLOPs per example: attention logits, softmax, mixing and the predictor."""
    return float(sum(2 * x.macs + x.elementwise_flops for x in layers if x.name.split("/")[-1] in MHSA_CORE_SUFFIXES))


def predictor_flops(layers: Sequence[LayerCost]) -> float:
    return float(sum(2 * x.macs + x.elementwise_flops for x in layers if "/predictor_" in x.name))

"""The shared cost model: FLOPs, parameters, weight bits and BOPs of a model config.

Costs are counted per layer as multiply-accumulates (MACs) and parameters, each
layer tagged with its group ("embed", "attention", "mlp", "head", ...) so bits
per group can be applied. FLOPs = 2 x MACs of every matmul and einsum (XLA's
convention) plus the element-wise work of softmax, LayerNorm and GELU; the test
holds the total within 10% of XLA's cost analysis of the compiled forward pass.
Memory = sum(weights x weight bits); BOPs = sum(MACs x weight bits x activation
bits) (Abdolrashidi et al., 2021, Sec. 3). Memory is priced as a quantized model
is served (AQT, `effjax.quant.serving`): only matmul kernels take the group's weight
bits; what stays float (biases, LayerNorm, class / position tokens) stays 32 bits,
and each quantized kernel adds one float32 scale per output channel. The two
activation x activation einsums of attention cost MACs x activation bits squared. Later issues add their layers
(sparse attention, MoE, slimmable widths) by extending `vit_layers`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from effjax.data.specs import TaskSpec
from effjax.subnet import FLOAT_BITS, SubnetConfig

# Element-wise FLOPs per element, as XLA's CPU cost analysis counts them (measured
# on jax 0.10.2; they are <5% of the total for the models here).
SOFTMAX_FLOPS_PER_ELEMENT = 5
LAYERNORM_FLOPS_PER_ELEMENT = 8
GELU_FLOPS_PER_ELEMENT = 11


@dataclasses.dataclass(frozen=True)
class LayerCost:
    name: str
    group: str
    macs: int  # multiply-accumulates per example
    params: int  # weights (kernels and biases); 0 for activation x activation einsums
    activation_only: bool = False  # an einsum of two activations (attention logits / mixing)
    elementwise_flops: int = 0
    float_params: int = 0  # of `params`, those that stay float32 when the weights are quantized (biases, norms, tokens)
    quant_scales: int = 0  # float32 scales the quantized kernels add (one per output channel)


@dataclasses.dataclass(frozen=True)
class Cost:
    flops: float  # per example
    params: int
    weight_bits: int  # model size in bits
    bops: float  # per example

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def attention_pair_layers(prefix: str, pairs: int, heads: int, inner: int) -> list[LayerCost]:
    """Attention's logits and mixing einsums over `pairs` query-key pairs per head (`inner` = heads x head size)."""
    return [LayerCost(f"{prefix}/attention_logits", "attention", pairs * inner, 0, activation_only=True,
                      elementwise_flops=heads * pairs * SOFTMAX_FLOPS_PER_ELEMENT),
            LayerCost(f"{prefix}/attention_mix", "attention", pairs * inner, 0, activation_only=True)]


def block_layers(prefix: str, n: int, d: int, heads: int, head_dim: int, mlp: int) -> list[LayerCost]:
    """One pre-norm transformer block on n tokens of width d: `heads` attention heads of `head_dim`, MLP `mlp`."""
    inner = heads * head_dim
    return [
        LayerCost(f"{prefix}/ln", "norm", 0, 4 * d, elementwise_flops=2 * n * d * LAYERNORM_FLOPS_PER_ELEMENT,
                  float_params=4 * d),
        LayerCost(f"{prefix}/qkv", "attention", 3 * n * d * inner, 3 * (d * inner + inner), float_params=3 * inner,
                  quant_scales=3 * inner),
        *attention_pair_layers(prefix, n * n, heads, inner),
        LayerCost(f"{prefix}/out", "attention", n * inner * d, inner * d + d, float_params=d, quant_scales=d),
        LayerCost(f"{prefix}/mlp", "mlp", 2 * n * d * mlp, 2 * d * mlp + mlp + d,
                  elementwise_flops=n * mlp * GELU_FLOPS_PER_ELEMENT, float_params=mlp + d, quant_scales=mlp + d),
    ]


def vit_layers(model_config, image_shape: Sequence[int], tasks: Sequence[TaskSpec], *, hidden: Optional[int] = None,
               heads: Optional[int] = None, mlp: Optional[int] = None,
               decoders: Optional[Mapping[str, int]] = None, image_head: str = "class_token",
               decoder_blocks: int = 0, decoder_block_widths: Optional[Mapping[str, tuple[int, int]]] = None,
               tokens_per_block: Optional[Sequence[int]] = None) -> list[LayerCost]:
    """Per-layer costs per example; the keyword widths override the config's (a sliced subnet).

    `image_head="mean_pool"`: image-level heads run their hidden layer on every token.
    `decoder_blocks`: transformer blocks per task before its head, on all tokens, with
    (heads, MLP width) per task from `decoder_block_widths` (default: the encoder's full
    num_heads and mlp_dim). `tokens_per_block`: the tokens each encoder block sees (token pruning;
    default all of them).
    """
    h, w, c = image_shape
    p = model_config.patch_size
    patches = (h // p) * (w // p)
    n = patches + 1
    d = hidden or model_config.hidden_dim
    m = mlp or model_config.mlp_dim
    heads = heads or model_config.num_heads
    head_dim = model_config.hidden_dim // model_config.num_heads
    decoders = decoders or {}
    decoder_block_widths = decoder_block_widths or {}
    layers = [LayerCost("patch_embed", "embed", patches * p * p * c * d, p * p * c * d + d, float_params=d, quant_scales=d),
              LayerCost("tokens", "embed", 0, d + n * d, float_params=d + n * d)]
    for i in range(model_config.num_layers):
        layers += block_layers(f"block{i}", tokens_per_block[i] if tokens_per_block else n, d, heads, d // heads, m)
    layers.append(LayerCost("ln_final", "norm", 0, 2 * d, elementwise_flops=n * d * LAYERNORM_FLOPS_PER_ELEMENT,
                            float_params=2 * d))
    pooled = image_head == "mean_pool"
    for t in tasks:
        block_heads, block_mlp = decoder_block_widths.get(t.name, (model_config.num_heads, model_config.mlp_dim))
        for j in range(decoder_blocks):
            layers += block_layers(f"head_{t.name}/block{j}", n, d, block_heads, head_dim, block_mlp)
        rows = patches if t.is_dense else (n if pooled else 1)  # tokens the hidden layer runs on
        out_rows = patches if t.is_dense else 1
        out = t.out_channels * (p * p if t.is_dense else 1)
        dec = decoders.get(t.name, model_config.decoder_dim)
        pool_flops = rows * dec if rows != out_rows else 0
        layers.append(LayerCost(f"head_{t.name}", "head", rows * d * dec + out_rows * dec * out,
                                2 * d + d * dec + dec + dec * out + out,
                                elementwise_flops=rows * (d * LAYERNORM_FLOPS_PER_ELEMENT + dec * GELU_FLOPS_PER_ELEMENT)
                                + pool_flops,
                                float_params=2 * d + dec + out, quant_scales=dec + out))
    return layers


def layer_weight_bits(layer: LayerCost, weight_bits: int) -> int:
    """Bits of one layer's parameters stored at `weight_bits` (float leftovers and scales at 32)."""
    if weight_bits >= FLOAT_BITS:
        return layer.params * FLOAT_BITS
    return (layer.params - layer.float_params) * weight_bits + (layer.float_params + layer.quant_scales) * FLOAT_BITS


def total_cost(layers: Sequence[LayerCost], subnet: Optional[SubnetConfig] = None) -> Cost:
    subnet = subnet or SubnetConfig()
    flops = bops = 0.0
    params = bits = 0
    for layer in layers:
        wb, ab = subnet.bits_for(layer.group)
        flops += 2 * layer.macs + layer.elementwise_flops
        bops += layer.macs * (ab * ab if layer.activation_only else wb * ab)
        params += layer.params
        bits += layer_weight_bits(layer, wb)
    return Cost(flops=flops, params=params, weight_bits=bits, bops=bops)

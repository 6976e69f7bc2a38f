"""The Sparsifiner pieces (Wei et al., CVPR 2023) of the elastic model's cost walker
(`cost_elastic.elastic_layers`), and the paper's MHSA FLOPs metric.

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
does not change; `mhsa_flops` sums them. The top-k selections move data and are not
counted; the gathers of the kept rows are (`cost_elastic`), but not in MHSA FLOPs.
"""

from __future__ import annotations

from typing import Sequence

from effjax.compress.cost import SOFTMAX_FLOPS_PER_ELEMENT, LayerCost, attention_pair_layers
from effjax.subnet import kept_key_count, predictor_rank

# layer-name suffixes that make up the paper's "MHSA FLOPs"
MHSA_CORE_SUFFIXES = ("attention_logits", "attention_mix", "predictor_reduce", "predictor_token_down",
                      "predictor_coefficients", "predictor_basis")


def attention_core_layers(name: str, n: int, heads: int, head_dim: int, keep_ratio: float, sparse: bool) -> list[LayerCost]:
    pairs = n + (n - 1) * kept_key_count(keep_ratio, n) if sparse else n * n
    return attention_pair_layers(name, pairs, heads, heads * head_dim)


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


def mhsa_flops(layers: Sequence[LayerCost]) -> float:
    """The paper's MHSA FLOPs per example: attention logits, softmax, mixing and the predictor."""
    return float(sum(2 * x.macs + x.elementwise_flops for x in layers if x.name.split("/")[-1] in MHSA_CORE_SUFFIXES))


def predictor_flops(layers: Sequence[LayerCost]) -> float:
    return float(sum(2 * x.macs + x.elementwise_flops for x in layers if "/predictor_" in x.name))

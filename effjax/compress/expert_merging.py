"""MC-SMoE expert merging (Li et al., "Merge, Then Compress", ICLR 2024), steps 1-3 without KD.

1. Routing statistics over a calibration set: how many tokens each router sends to
   each expert (usage frequency), their summed gate weights, and router logits.
2. Grouping: the `num_groups` most used experts are the dominant experts; every other
   expert joins the dominant expert whose router logits are most similar (cosine
   similarity of the experts' logit columns over the calibration tokens).
3. Merging: each member is permutation-aligned to its group's dominant expert (the
   hidden units of an expert MLP can be permuted without changing its function; the
   permutation maximizing the summed similarity of the units' weight vectors
   [w_in column, b_in, w_out row] is found by `scipy.optimize.linear_sum_assignment`),
   then W_merged = sum_e f_e W_e / sum_e f_e with f the usage frequency.
   Router re-binding: the router keeps its E columns; column e now points at merged
   expert group(e) (`router_groups`), so a token's probability for a merged expert is
   the summed probability of its members.
`weighting="uniform"` with `align=False` is the plain-averaging baseline.

Parameters are nested dicts of arrays; a MoE layer is any sub-dict holding `router`,
`wi`, `bi`, `wo`, `bo` (router [R, d, E], wi [E, d, m], bi [E, m], wo [E, m, d], bo [E, d]).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Mapping, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

EXPERT_KEYS = ("wi", "bi", "wo", "bo")
WEIGHTINGS = ("frequency", "uniform")
_ROUTER_KEY = re.compile(r"router(\d+)$")


@dataclasses.dataclass
class LayerRoutingStats:
    """Calibration statistics of one MoE layer; R routers (tasks) x E router outputs."""

    expert_tokens: np.ndarray  # [R, E] assignments per router and expert
    gate_sum: np.ndarray  # [R, E] summed gate weight of those assignments
    tokens: np.ndarray  # [R] tokens routed by each router
    experts_per_token: list  # per router, a list of per-example means
    logits: list  # per router, [N, E] router logits of up to `max_logit_rows` tokens

    def frequency(self, router: Optional[int] = None) -> np.ndarray:
        """Usage frequency f_e: the fraction of a router's (or all routers') assignments going to e."""
        counts = self.expert_tokens.sum(0) if router is None else self.expert_tokens[router]
        return counts / max(counts.sum(), 1e-12)

    def mean_gate(self) -> np.ndarray:
        """Average gate weight of an expert's assignments (MC#'s activated weight w_e)."""
        counts = self.expert_tokens.sum(0)
        return np.where(counts > 0, self.gate_sum.sum(0) / np.maximum(counts, 1e-12), 0.0)


def accumulate_routing_stats(stats_trees: Iterable[Mapping], max_logit_rows: int = 8192) -> dict[str, LayerRoutingStats]:
    """Sums the `moe_stats` collections of several calibration batches, per MoE layer.

    Each tree is what `model.apply(..., mutable=["moe_stats"])` returned under
    "moe_stats": layer path -> "router{r}" -> tuple of sown dicts.
    """
    layers: dict[str, dict[int, list]] = {}
    for tree in stats_trees:
        for (layer, router), sown in _iter_router_entries(tree):
            layers.setdefault(layer, {}).setdefault(router, []).extend(sown)
    result = {}
    for layer, routers in layers.items():
        num_routers = max(routers) + 1
        first = next(iter(routers.values()))[0]
        num_outputs, num_experts = np.shape(first["logits"])[-1], np.shape(first["expert_tokens"])[-1]
        expert_tokens = np.zeros((num_routers, num_experts))
        gate_sum = np.zeros((num_routers, num_experts))
        tokens = np.zeros(num_routers)
        per_token: list = [[] for _ in range(num_routers)]
        logits: list = [np.zeros((0, num_outputs)) for _ in range(num_routers)]
        for r, entries in routers.items():
            for entry in entries:
                expert_tokens[r] += np.asarray(entry["expert_tokens"]).sum(0)
                gate_sum[r] += np.asarray(entry["gate_sum"]).sum(0)
                lg = np.asarray(entry["logits"])
                tokens[r] += lg.shape[0] * lg.shape[1]
                per_token[r].extend(np.asarray(entry["experts_per_token"]).tolist())
                room = max_logit_rows - logits[r].shape[0]
                if room > 0:
                    logits[r] = np.concatenate([logits[r], lg.reshape(-1, num_outputs)[:room]])
        result[layer] = LayerRoutingStats(expert_tokens, gate_sum, tokens, per_token, logits)
    return dict(sorted(result.items(), key=lambda kv: _block_order(kv[0])))


def _subtrees(tree: Mapping, prefix: str = ""):
    """(path, mapping) of `tree` and of every mapping below it, parents first."""
    yield prefix, tree
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _subtrees(value, f"{prefix}/{key}" if prefix else str(key))


def _iter_router_entries(tree: Mapping):
    for prefix, subtree in _subtrees(tree):
        for key, value in subtree.items():
            match = _ROUTER_KEY.match(str(key))
            if match and isinstance(value, (tuple, list)):
                yield (prefix, int(match.group(1))), list(value)


def _block_order(path: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", path)) + (path,)


def find_moe_layers(params: Mapping) -> dict[str, Mapping]:
    """Path -> layer dict of every MoE layer in a parameter tree, in block order."""
    found = {path: tree for path, tree in _subtrees(params) if all(k in tree for k in EXPERT_KEYS + ("router",))}
    return dict(sorted(found.items(), key=lambda kv: _block_order(kv[0])))


def unit_features(layer: Mapping, expert: int) -> np.ndarray:
    """[m, 2d + 1]: per hidden unit of an expert, its input column, bias and output row."""
    wi, bi, wo = (np.asarray(layer[k][expert], np.float64) for k in ("wi", "bi", "wo"))
    return np.concatenate([wi.T, bi[:, None], wo], axis=1)


def alignment_permutation(reference: np.ndarray, features: np.ndarray) -> np.ndarray:
    """perm with features[perm] matched unit-by-unit to reference (maximum summed inner product)."""
    _, cols = linear_sum_assignment(-(reference @ features.T))
    return cols


def permute_expert(layer: Mapping, expert: int, perm: np.ndarray) -> dict[str, np.ndarray]:
    """The expert's weights with hidden units reordered by `perm` (same function)."""
    return {"wi": np.asarray(layer["wi"][expert])[:, perm], "bi": np.asarray(layer["bi"][expert])[perm],
            "wo": np.asarray(layer["wo"][expert])[perm, :], "bo": np.asarray(layer["bo"][expert])}


def router_similarity(logits: np.ndarray) -> np.ndarray:
    """[E, E] cosine similarity of the experts' router-logit columns over calibration tokens."""
    centred = logits - logits.mean(0, keepdims=True)
    norms = np.linalg.norm(centred, axis=0)
    return (centred.T @ centred) / np.maximum(np.outer(norms, norms), 1e-12)


def group_experts(frequency: np.ndarray, similarity: np.ndarray, num_groups: int) -> np.ndarray:
    """Group label (0..num_groups-1) per expert; group g is led by the g-th dominant expert by index."""
    num_experts = len(frequency)
    if not 1 <= num_groups <= num_experts:
        raise ValueError(f"num_groups={num_groups}: must be in [1, num_experts={num_experts}]")
    dominant = np.sort(np.argsort(-frequency, kind="stable")[:num_groups])
    labels = np.empty(num_experts, np.int64)
    for e in range(num_experts):
        labels[e] = np.flatnonzero(dominant == e)[0] if e in dominant else int(np.argmax(similarity[e, dominant]))
    return labels


def merge_layer(layer: Mapping, labels: np.ndarray, frequency: np.ndarray, align: bool = True,
                weighting: str = "frequency") -> dict[str, np.ndarray]:
    """Merged expert weights [G, ...] and the unchanged router; dominant = most frequent member of a group."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}: allowed: {list(WEIGHTINGS)}")
    num_groups = int(labels.max()) + 1
    merged = {k: [] for k in EXPERT_KEYS}
    for g in range(num_groups):
        members = np.flatnonzero(labels == g)
        lead = members[np.argmax(frequency[members])]
        reference = unit_features(layer, lead)
        if weighting == "frequency" and frequency[members].sum() > 0:
            weights = frequency[members] / frequency[members].sum()
        else:
            weights = np.full(len(members), 1.0 / len(members))
        total = {k: 0.0 for k in EXPERT_KEYS}
        for e, w in zip(members, weights):
            perm = alignment_permutation(reference, unit_features(layer, e)) if align and e != lead \
                else np.arange(np.asarray(layer["bi"]).shape[-1])
            expert = permute_expert(layer, e, perm)
            total = {k: total[k] + w * expert[k] for k in EXPERT_KEYS}
        for k in EXPERT_KEYS:
            merged[k].append(total[k])
    out = {k: np.stack(v).astype(np.asarray(layer[k]).dtype) for k, v in merged.items()}
    out["router"] = np.asarray(layer["router"])
    return out


def merge_moe_params(params: Mapping, stats: Mapping[str, LayerRoutingStats], num_groups: int, align: bool = True,
                     weighting: str = "frequency") -> tuple[dict, tuple[tuple[int, ...], ...]]:
    """All MoE layers merged to `num_groups` experts; returns (params, router_groups per layer).

    Build the merged model with `num_experts=num_groups` and `router_groups=` the returned tuple.
    """
    layers = find_moe_layers(params)
    missing = [p for p in layers if p not in stats]
    if missing:
        raise ValueError(f"stats: no routing statistics for MoE layers {missing}; collected: {list(stats)}")
    replaced, groups = {}, []
    for path, layer in layers.items():
        s = stats[path]
        logits = np.concatenate(s.logits, axis=0)
        labels = group_experts(s.frequency(), router_similarity(logits), num_groups)
        replaced[path] = merge_layer(layer, labels, s.frequency(), align, weighting)
        groups.append(tuple(int(g) for g in labels))
    return replace_layers(params, replaced), tuple(groups)


def replace_layers(tree: Mapping, replaced: Mapping[str, Mapping], prefix: str = "") -> dict:
    """A copy of a parameter tree with the sub-dicts at the given paths replaced."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if path in replaced:
            out[key] = dict(replaced[path])
        elif isinstance(value, Mapping):
            out[key] = replace_layers(value, replaced, path)
        else:
            out[key] = value
    return out

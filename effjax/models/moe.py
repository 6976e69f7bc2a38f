"""Mixture-of-Experts MLP: routers, top-k / top-p routing, dispatch/combine, capacity, losses.

Follows M3ViT (Liang et al., NeurIPS 2022) for the layer and the per-task routers,
"Harder Tasks Need More Experts" (Huang et al., 2024) for top-p routing, and the
Switch Transformer / GShard recipe for capacity, dropping and the auxiliary losses.

Routing (per token; logits = x W_router[task], probabilities P = softmax(logits)):
  - top-k: the k most probable experts; gates = their probabilities (M3ViT's public
    code does not renormalize; `renormalize_gates=True` divides by their sum);
  - top-p (Huang et al., Sec. 3): sort P descending and keep experts until the cumulative
    probability reaches p (the first expert always); gates = the kept probabilities.
A routing is a list of K "choices" per token (K = k, or K = E for top-p with the
unused choices marked invalid), so every dispatch below serves both rules.

Capacity: tokens are routed in groups (one group = one example), each expert takes
C = ceil(capacity_factor * S * k / E) tokens of a group; first choices of all tokens
are served before second choices (GShard's priority), the rest are dropped (their
contribution is zero and the residual carries them). `capacity_factor <= 0` is the
dropless setting C = S. One group per example makes routing, capacity and dropping
independent of how the batch is split over devices.

Dispatch implementations (benchmarked in tools/bench_moe_dispatch.py):
  - "einsum": one-hot dispatch / combine tensors [G, S, E, C] and einsums (GShard);
  - "gather": slot indices; tokens gathered into [G, E, C, d] buffers and gathered back;
  - "ragged": dropless; assignments sorted by expert and multiplied with
    `lax.ragged_dot` (a grouped matmul on accelerators; ignores capacity);
  - "sorted": dropless; assignments counting-sorted by expert into one buffer whose
    expert segments are padded to whole row tiles, each tile one dense matmul with
    its expert's weights (the block-sparse grouped matmul of MegaBlocks, Gale et al.,
    MLSys 2023); ignores capacity;
  - "dense": every expert on every token, weighted by the gates (dropless reference).

Auxiliary losses, sown already weighted into AUX_LOSS_COLLECTION:
  - load balance (Switch, Eq. 4): E * sum_e f_e * Pbar_e, f_e the fraction of routed
    assignments sent to expert e, Pbar_e the mean router probability (1.0 when uniform);
    M3ViT uses CV^2(importance) + CV^2(load) instead, which needs noisy gating;
  - router z-loss (ST-MoE, Eq. 5): mean over tokens of logsumexp(logits)^2;
  - router entropy (Huang et al., Eq. 6): mean over tokens of -sum_e P_e log P_e, which
    keeps top-p routing from spreading to many experts.

Expert parallelism: expert weights are [E, d, m] with logical axes ("expert", "embed",
"mlp"). Inside a mesh whose `activation_expert` axis is larger than 1, the layer runs
under `jax.shard_map`: each device dispatches its own examples locally, sends every
expert's buffer to the device holding that expert with an all-to-all, runs its local
experts, sends the results back with a second all-to-all and combines (GShard, Sec. 2.2).
By default `activation_batch` includes the expert axis, so the rest of the model splits
the batch over it too; with rules that leave it out, the examples are replicated over an
expert group and each device of the group takes its share, then all-gathers the group's.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

from effjax.models.layers import (AUX_LOSS_COLLECTION, DotGeneralProvider, constrain, einsum, injected_dot_general,
                                  mesh_axes, resolve_dot_general)

# Routing statistics (expert counts, experts per token, router logits) are sown here
# when the caller makes the collection mutable (calibration for expert merging).
MOE_STATS_COLLECTION = "moe_stats"
DISPATCH_METHODS = ("einsum", "gather", "ragged", "sorted", "dense")
SORTED_TILE_ROWS = 128  # rows of one grouped-matmul tile of the "sorted" path
EXPERT_PARALLEL_MODES = ("auto", "off")


class Routing(NamedTuple):
    """K routing choices per token, best first: expert, gate weight, and whether the choice is used."""

    expert_index: jax.Array  # [G, S, K] int32
    gate: jax.Array  # [G, S, K] float32, zero where not valid
    valid: jax.Array  # [G, S, K] bool
    probs: jax.Array  # [G, S, E] float32 router probabilities
    logits: jax.Array  # [G, S, E] float32 router logits


def top_k_routing(logits: jax.Array, k: int, renormalize: bool = False) -> Routing:
    num_experts = logits.shape[-1]
    if not 1 <= k <= num_experts:
        raise ValueError(f"top_k={k}: must be in [1, num_experts={num_experts}]")
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    gate, index = lax.top_k(probs, k)
    if renormalize:
        gate = gate / jnp.maximum(gate.sum(-1, keepdims=True), 1e-9)
    return Routing(index.astype(jnp.int32), gate, jnp.ones_like(gate, bool), probs, logits)


def top_p_routing(logits: jax.Array, p: float, renormalize: bool = False) -> Routing:
    """Experts in decreasing probability until their cumulative probability reaches p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"top_p={p}: must be in (0, 1)")
    num_experts = logits.shape[-1]
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    sorted_probs, index = lax.top_k(probs, num_experts)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    valid = mass_before < p
    valid = valid.at[..., 0].set(True)  # never an empty selection, whatever the rounding
    gate = jnp.where(valid, sorted_probs, 0.0)
    if renormalize:
        gate = gate / jnp.maximum(gate.sum(-1, keepdims=True), 1e-9)
    return Routing(index.astype(jnp.int32), gate, valid, probs, logits)


def route(logits: jax.Array, top_k: int, top_p: float = 0.0, renormalize: bool = False) -> Routing:
    """Top-p routing when 0 < top_p < 1, top-k otherwise."""
    if top_p:
        return top_p_routing(logits, top_p, renormalize)
    return top_k_routing(logits, top_k, renormalize)


def merge_duplicate_choices(routing: Routing) -> Routing:
    """One choice per (token, expert): later choices of an expert already chosen add their gate to the first.

    Needed after router re-binding (several router outputs point at one merged expert),
    so a token takes at most one slot of each expert.
    """
    index, valid = routing.expert_index, routing.valid
    k = index.shape[-1]
    same = (index[..., :, None] == index[..., None, :]) & valid[..., :, None] & valid[..., None, :]  # [G, S, K, K]
    earlier = jnp.triu(jnp.ones((k, k), bool), 1)  # earlier[i, j]: i < j
    duplicate = jnp.any(same & earlier, axis=-2)
    keep = valid & ~duplicate
    gate = jnp.where(keep, jnp.einsum("gsij,gsj->gsi", same.astype(routing.gate.dtype), routing.gate), 0.0)
    return routing._replace(gate=gate, valid=keep)


def expert_capacity(tokens_per_group: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert and group; `capacity_factor <= 0` means dropless (every token fits)."""
    if capacity_factor <= 0:
        return tokens_per_group
    return min(tokens_per_group, max(1, math.ceil(capacity_factor * tokens_per_group * top_k / num_experts)))


def assign_slots(routing: Routing, num_experts: int, capacity: int) -> tuple[jax.Array, jax.Array]:
    """Slot of every choice in its expert's buffer, flattened to expert * capacity + position.

    Positions are counted choice-major (all first choices of a group, in token order,
    then all second choices, ...). Returns (slot [G, S, K] with E * C for dropped or
    invalid choices, kept [G, S, K] bool).
    """
    g, s, k = routing.expert_index.shape
    onehot = jax.nn.one_hot(routing.expert_index, num_experts, dtype=jnp.int32) * routing.valid[..., None]
    choice_major = onehot.transpose(0, 2, 1, 3).reshape(g, k * s, num_experts)
    before = jnp.cumsum(choice_major, axis=1) - choice_major
    position = (before * choice_major).sum(-1).reshape(g, k, s).transpose(0, 2, 1)
    kept = routing.valid & (position < capacity)
    slot = jnp.where(kept, routing.expert_index * capacity + position, num_experts * capacity)
    return slot.astype(jnp.int32), kept


def dispatch_einsum(x: jax.Array, slot: jax.Array, num_experts: int, capacity: int) -> jax.Array:
    """[G, S, d] -> expert buffers [G, E, C, d] through a one-hot dispatch tensor."""
    g, s, d = x.shape
    dispatch = jax.nn.one_hot(slot, num_experts * capacity, dtype=x.dtype).sum(2)  # dropped slots one-hot to zero
    return jnp.einsum("gsx,gsd->gxd", dispatch, x).reshape(g, num_experts, capacity, d)


def combine_einsum(expert_out: jax.Array, slot: jax.Array, gate: jax.Array) -> jax.Array:
    """Expert outputs [G, E, C, d] -> tokens [G, S, d], each the gate-weighted sum of its choices."""
    g, e, c, d = expert_out.shape
    weights = jnp.einsum("gskx,gsk->gsx", jax.nn.one_hot(slot, e * c, dtype=expert_out.dtype), gate.astype(expert_out.dtype))
    return jnp.einsum("gsx,gxd->gsd", weights, expert_out.reshape(g, e * c, d))


def dispatch_gather(x: jax.Array, slot: jax.Array, num_experts: int, capacity: int) -> jax.Array:
    """[G, S, d] -> [G, E, C, d]: each slot gathers the token that fills it (empty slots get zeros)."""
    g, s, d = x.shape
    k = slot.shape[-1]
    tokens = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32)[None, :, None], (g, s, k))
    rows = jnp.broadcast_to(jnp.arange(g)[:, None, None], (g, s, k))
    slot_token = jnp.full((g, num_experts * capacity), s, jnp.int32).at[rows, slot].set(tokens, mode="drop")
    x_padded = jnp.concatenate([x, jnp.zeros((g, 1, d), x.dtype)], axis=1)
    return jnp.take_along_axis(x_padded, slot_token[..., None], axis=1).reshape(g, num_experts, capacity, d)


def combine_gather(expert_out: jax.Array, slot: jax.Array, gate: jax.Array) -> jax.Array:
    g, e, c, d = expert_out.shape
    flat = jnp.concatenate([expert_out.reshape(g, e * c, d), jnp.zeros((g, 1, d), expert_out.dtype)], axis=1)
    chosen = jnp.take_along_axis(flat, slot.reshape(g, -1)[..., None], axis=1).reshape(slot.shape + (d,))
    return jnp.einsum("gskd,gsk->gsd", chosen, gate.astype(expert_out.dtype))


_DISPATCH = {"einsum": (dispatch_einsum, combine_einsum), "gather": (dispatch_gather, combine_gather)}


class ExpertWeights(NamedTuple):
    wi: jax.Array  # [E, d, m]
    bi: jax.Array  # [E, m]
    wo: jax.Array  # [E, m, d]
    bo: jax.Array  # [E, d]


def expert_params(module: nn.Module, e: int, d: int, m: int, mlp_axis: str = "mlp") -> ExpertWeights:
    """The float32 parameters wi, bi, wo, bo of `module`'s E experts (call inside its compact `__call__`);
    `mlp_axis` is the logical name of their hidden axis."""
    def param(name, init, axes, shape):
        return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)

    init, zeros = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,)), nn.initializers.zeros
    return ExpertWeights(param("wi", init, ("expert", "embed", mlp_axis), (e, d, m)),
                         param("bi", zeros, ("expert", mlp_axis), (e, m)),
                         param("wo", init, ("expert", mlp_axis, "embed"), (e, m, d)),
                         param("bo", zeros, ("expert", "embed"), (e, d)))


def expert_mlp(buffers: jax.Array, w: ExpertWeights, dot_generals=(lax.dot_general, lax.dot_general)) -> jax.Array:
    """Each expert's GELU MLP on its buffer: [G, E, C, d] -> [G, E, C, d].

    Both matmuls are dot_generals with the expert as batch dimension, so injected
    (e.g. AQT) dot_generals, one per kernel, quantize experts like any Dense layer.
    """
    dtype = buffers.dtype
    dot_in, dot_out = dot_generals
    h = dot_in(buffers, w.wi.astype(dtype), (((3,), (1,)), ((1,), (0,))), precision=None)  # [E, G, C, m]
    h = nn.gelu(h + w.bi.astype(dtype)[:, None, None, :])
    out = dot_out(h, w.wo.astype(dtype), (((3,), (1,)), ((0,), (0,))), precision=None)  # [E, G, C, d]
    out = out + w.bo.astype(dtype)[:, None, None, :]
    return out.transpose(1, 0, 2, 3)


def moe_capacity_path(x, routing: Routing, w: ExpertWeights, capacity: int, method: str,
                      dot_generals=(lax.dot_general, lax.dot_general), active_capacity=None,
                      expert_parallel: bool = True):
    """Dispatch -> experts -> combine (capacity-based methods).

    `active_capacity` (may be traced, <= capacity) drops the choices whose position in
    their expert's buffer is beyond it: buffers sized for the largest top-k of a menu
    then route exactly as buffers sized for a smaller, traced top-k would. Inside a mesh
    where `expert_parallel_plan` applies (and `expert_parallel`), the experts run under
    shard_map with all-to-all exchanges (`moe_expert_parallel`); otherwise as one global
    computation that GSPMD partitions from the sharding constraints.
    """
    dispatch, combine = _DISPATCH[method]
    num_experts = w.wi.shape[0]
    slot, kept = assign_slots(routing, num_experts, capacity)
    if active_capacity is not None:
        kept = kept & (slot % capacity < active_capacity)
        slot = jnp.where(kept, slot, num_experts * capacity)
    gate = jnp.where(kept, routing.gate, 0.0)
    plan = expert_parallel_plan(x.shape[0], num_experts) if expert_parallel else None
    if plan is not None:
        return moe_expert_parallel(x, slot, gate, w, capacity, method, plan, dot_generals)
    buffers = dispatch(x, slot, num_experts, capacity)
    buffers = constrain(buffers, ("activation_batch", "activation_expert", None, "activation_embed"))
    out = expert_mlp(buffers, w, dot_generals)
    out = constrain(out, ("activation_batch", "activation_expert", None, "activation_embed"))
    return combine(out, slot, gate)


def moe_dense_path(x, routing: Routing, w: ExpertWeights, dot_generals=(lax.dot_general, lax.dot_general)):
    """Every expert on every token; the reference the dispatching paths must match when dropless."""
    num_experts = w.wi.shape[0]
    g, s, d = x.shape
    buffers = jnp.broadcast_to(x[:, None], (g, num_experts, s, d))
    out = expert_mlp(buffers, w, dot_generals)  # [G, E, S, d]
    weights = jnp.einsum("gske,gsk->gse", jax.nn.one_hot(routing.expert_index, num_experts, dtype=x.dtype),
                         routing.gate.astype(x.dtype))
    return jnp.einsum("gse,gesd->gsd", weights, out)


def moe_ragged_path(x, routing: Routing, w: ExpertWeights):
    """Dropless: assignments sorted by expert, grouped matmuls with `lax.ragged_dot`."""
    num_experts = w.wi.shape[0]
    g, s, d = x.shape
    k = routing.expert_index.shape[-1]
    dtype = x.dtype
    expert = jnp.where(routing.valid, routing.expert_index, num_experts).reshape(-1)
    order = jnp.argsort(expert, stable=True)
    token = (jnp.arange(g * s * k, dtype=jnp.int32) // k)[order]
    sorted_expert = expert[order]
    group_sizes = jnp.bincount(expert, length=num_experts + 1)[:num_experts].astype(jnp.int32)
    xs = x.reshape(g * s, d)[token]
    bias_index = jnp.minimum(sorted_expert, num_experts - 1)
    h = nn.gelu(lax.ragged_dot(xs, w.wi.astype(dtype), group_sizes) + w.bi.astype(dtype)[bias_index])
    out = lax.ragged_dot(h, w.wo.astype(dtype), group_sizes) + w.bo.astype(dtype)[bias_index]
    gate = routing.gate.reshape(-1)[order].astype(dtype)  # zero for invalid choices
    y = jnp.zeros((g * s, d), dtype).at[token].add(out * gate[:, None])
    return y.reshape(g, s, d)


class SortedLayout(NamedTuple):
    """Where every routing choice sits in the tile-padded, expert-sorted buffer of the "sorted" path."""

    row: jax.Array  # [G, S, K] int32 buffer row of each choice; `rows` (one past the end) when invalid
    row_token: jax.Array  # [rows] int32 flat token (g * S + s) filling each row; G * S for padding rows
    row_choice: jax.Array  # [rows + 1] int32 flat choice (g * S * K + s * K + k) in each row; G * S * K if none
    tile_expert: jax.Array  # [rows // tile] int32 expert whose weights each tile multiplies
    tile: int  # rows per tile


def sorted_layout(routing: Routing, num_experts: int, tile: int = SORTED_TILE_ROWS) -> SortedLayout:
    """Counting sort of the valid choices by expert, each expert's segment padded to a multiple of `tile`.

    Within an expert, choices keep token-major order (g, s, k). With A choices the
    padded segments need at most ceil(A / tile) + E - 1 tiles (each expert wastes
    fewer than one tile), which is the static buffer size.
    """
    g, s, k = routing.expert_index.shape
    assignments = g * s * k
    tile = max(1, min(tile, assignments))
    num_tiles = max(1, -(-assignments // tile) + num_experts - 1)
    rows = num_tiles * tile
    onehot = jax.nn.one_hot(routing.expert_index.reshape(-1), num_experts, dtype=jnp.int32)
    onehot = onehot * routing.valid.reshape(-1, 1)
    rank = ((jnp.cumsum(onehot, axis=0) - onehot) * onehot).sum(-1)  # position within the expert's segment
    counts = onehot.sum(0)
    padded_end = jnp.cumsum(-(-counts // tile) * tile)
    start = padded_end - -(-counts // tile) * tile
    row = jnp.where(routing.valid.reshape(-1), start[routing.expert_index.reshape(-1)] + rank, rows)
    row_choice = jnp.full((rows,), assignments, jnp.int32).at[row].set(
        jnp.arange(assignments, dtype=jnp.int32), mode="drop")  # invalid choices (row == rows) dropped
    row_token = jnp.minimum(row_choice // k, g * s)
    row_choice = jnp.concatenate([row_choice, jnp.full((1,), assignments, jnp.int32)])
    tile_expert = jnp.searchsorted(padded_end, jnp.arange(num_tiles, dtype=padded_end.dtype) * tile, side="right")
    tile_expert = jnp.minimum(tile_expert, num_experts - 1).astype(jnp.int32)  # tiles past the last segment are empty
    return SortedLayout(row.reshape(g, s, k).astype(jnp.int32), row_token, row_choice, tile_expert, tile)


@jax.custom_vjp
def gather_rows(table: jax.Array, index: jax.Array, inverse: jax.Array) -> jax.Array:
    """`table[index]` for a one-to-many row map whose inverse is known, with a gather as its gradient.

    `inverse[r]` lists the flat positions of `index` that read row r (padded with
    `index.size`, which reads zero); the gradient of row r is the sum of those positions'
    gradients. This replaces the scatter-add of the plain gather's gradient, which XLA runs
    serially on CPU, by a gather that it runs in parallel. Every position of `index` must be
    listed in `inverse` exactly once.
    """
    return table[index]


def _gather_rows_forward(table, index, inverse):
    return table[index], (index, inverse)


def _gather_rows_backward(residuals, grad):
    index, inverse = residuals
    d = grad.shape[-1]
    flat = jnp.concatenate([grad.reshape(-1, d), jnp.zeros((1, d), grad.dtype)], axis=0)
    return flat[inverse].sum(axis=1), None, None


gather_rows.defvjp(_gather_rows_forward, _gather_rows_backward)


def moe_sorted_path(x, routing: Routing, w: ExpertWeights, dot_generals=(lax.dot_general, lax.dot_general),
                    tile: int = SORTED_TILE_ROWS):
    """Dropless: tokens gathered into the expert-sorted, tile-padded buffer, one dense matmul per tile.

    Each tile gathers its expert's weights, so the two expert matmuls are batched
    dot_generals over tiles ([T, tile, d] x [T, d, m]); their cost is that of the
    routed choices plus less than one tile of padding per expert, and no choice is dropped.
    """
    g, s, d = x.shape
    num_experts = w.wi.shape[0]
    dtype = x.dtype
    layout = sorted_layout(routing, num_experts, tile)
    num_tiles = layout.tile_expert.shape[0]
    rows = num_tiles * layout.tile
    choice_rows = layout.row.reshape(g * s, -1)
    token_rows = jnp.concatenate([choice_rows, jnp.full((1, choice_rows.shape[1]), rows, jnp.int32)], axis=0)
    x_padded = jnp.concatenate([x.reshape(g * s, d), jnp.zeros((1, d), dtype)], axis=0)
    buffers = gather_rows(x_padded, layout.row_token, token_rows).reshape(num_tiles, layout.tile, d)
    dot_in, dot_out = dot_generals
    e = layout.tile_expert
    h = dot_in(buffers, w.wi.astype(dtype)[e], (((2,), (1,)), ((0,), (0,))), precision=None)  # [T, tile, m]
    h = nn.gelu(h + w.bi.astype(dtype)[e][:, None, :])
    out = dot_out(h, w.wo.astype(dtype)[e], (((2,), (1,)), ((0,), (0,))), precision=None)  # [T, tile, d]
    out = out + w.bo.astype(dtype)[e][:, None, :]
    flat = jnp.concatenate([out.reshape(rows, d), jnp.zeros((1, d), dtype)], axis=0)
    chosen = gather_rows(flat, choice_rows, layout.row_choice[:, None])  # [G*S, K, d]; invalid: the zero row
    y = jnp.einsum("tkd,tk->td", chosen, routing.gate.reshape(g * s, -1).astype(dtype))
    return y.reshape(g, s, d)


def load_balance_loss(routing: Routing) -> jax.Array:
    """Switch Transformer Eq. 4: E * sum_e (fraction of assignments to e) * (mean probability of e)."""
    num_experts = routing.probs.shape[-1]
    assigned = (jax.nn.one_hot(routing.expert_index, num_experts) * routing.valid[..., None]).sum((0, 1, 2))
    fraction = assigned / jnp.maximum(assigned.sum(), 1.0)
    mean_prob = routing.probs.mean((0, 1))
    return num_experts * jnp.sum(fraction * mean_prob)


def router_z_loss(logits: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1) ** 2)


def router_entropy(probs: jax.Array) -> jax.Array:
    return jnp.mean(-jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-9)), axis=-1))


def sow_router_losses(module: nn.Module, routing: Routing, balance_weight: float, z_loss_weight: float,
                      entropy_weight: float = 0.0) -> None:
    """Sows the weighted auxiliary losses of `routing` (those of non-zero weight) into AUX_LOSS_COLLECTION."""
    if balance_weight:
        module.sow(AUX_LOSS_COLLECTION, "balance_loss", balance_weight * load_balance_loss(routing))
    if z_loss_weight:
        module.sow(AUX_LOSS_COLLECTION, "router_z_loss", z_loss_weight * router_z_loss(routing.logits))
    if entropy_weight:
        module.sow(AUX_LOSS_COLLECTION, "router_entropy", entropy_weight * router_entropy(routing.probs))


class ExpertParallelPlan(NamedTuple):
    batch_axes: tuple[str, ...]  # the mesh axes the examples are split over
    expert_axes: tuple[str, ...]  # the mesh axes the experts are split over
    expert_size: int  # devices along expert_axes
    batch_split: bool  # the examples are already split over expert_axes (they are among batch_axes)


def expert_parallel_plan(batch_size: int, num_experts: int) -> Optional[ExpertParallelPlan]:
    """How the all-to-all path splits the layer, or None where it does not apply.

    It applies inside a mesh whose `activation_expert` axes have more than one device, when
    the experts divide evenly over them and every device gets the same number of examples;
    otherwise the layer runs as one global computation and GSPMD partitions it from the
    sharding constraints. The expert axes are either all among the batch axes or none of them.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None
    expert_axes = mesh_axes("activation_expert")
    batch_axes = mesh_axes("activation_batch")
    expert_size = math.prod(mesh.shape[a] for a in expert_axes)
    batch_size_devices = math.prod(mesh.shape[a] for a in batch_axes)
    shared = set(expert_axes) & set(batch_axes)
    if expert_size <= 1 or shared not in (set(), set(expert_axes)):
        return None
    batch_split = bool(shared)
    if num_experts % expert_size or batch_size % (batch_size_devices * (1 if batch_split else expert_size)):
        return None
    return ExpertParallelPlan(batch_axes, expert_axes, expert_size, batch_split)


def moe_expert_parallel(x, slot, gate, w: ExpertWeights, capacity: int, method: str, plan: ExpertParallelPlan,
                        dot_generals=(lax.dot_general, lax.dot_general)):
    """The capacity path's dispatch, experts and combine under shard_map with all-to-all exchanges over the expert
    mesh axes; `slot` and `gate` (zero for dropped choices) as the capacity path assigns them."""
    num_experts = w.wi.shape[0]
    dispatch, combine = _DISPATCH[method]
    batch_spec = PartitionSpec(plan.batch_axes or None)
    expert_spec = PartitionSpec(plan.expert_axes)
    expert_axes = plan.expert_axes

    def local(x, slot, gate, wi, bi, wo, bo):
        if not plan.batch_split:  # the group's examples are replicated: this device takes its share
            share = x.shape[0] // plan.expert_size
            start = lax.axis_index(expert_axes) * share
            take = lambda a: lax.dynamic_slice_in_dim(a, start, share, axis=0)  # noqa: E731
            x, slot, gate = take(x), take(slot), take(gate)
        buffers = dispatch(x, slot, num_experts, capacity)  # [share, E, C, d]
        buffers = lax.all_to_all(buffers, expert_axes, split_axis=1, concat_axis=0, tiled=True)  # [group, E/X, C, d]
        out = expert_mlp(buffers, ExpertWeights(wi, bi, wo, bo), dot_generals)
        out = lax.all_to_all(out, expert_axes, split_axis=0, concat_axis=1, tiled=True)  # [share, E, C, d]
        y = combine(out, slot, gate)
        return y if plan.batch_split else lax.all_gather(y, expert_axes, axis=0, tiled=True)

    return jax.shard_map(
        local,
        in_specs=(batch_spec, batch_spec, batch_spec, expert_spec, expert_spec, expert_spec, expert_spec),
        out_specs=batch_spec,
        check_vma=False,
    )(x, slot, gate, *w)


class MoeMlp(nn.Module):
    """MoE replacement of the ViT MLP: `num_routers` routers (one per task), E GELU experts.

    Call with x [B, S, d] (one routing group per example), the router to use, and the
    routing rule (top_k, or top_p > 0). Returns [B, S, d].
    """

    num_experts: int
    expert_dim: int
    num_routers: int = 1
    top_k: int = 2  # default experts per token
    capacity_factor: float = 1.25  # <= 0: dropless
    dispatch: str = "einsum"
    renormalize_gates: bool = False
    balance_weight: float = 0.01
    z_loss_weight: float = 1e-3
    entropy_weight: float = 0.0
    router_groups: Optional[tuple[int, ...]] = None  # router column -> expert, after merging; None: identity
    expert_parallel: str = "auto"
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    def _check(self, router_index: int, top_k: int):
        if self.dispatch not in DISPATCH_METHODS:
            raise ValueError(f"dispatch={self.dispatch!r}: allowed: {list(DISPATCH_METHODS)}")
        if self.expert_parallel not in EXPERT_PARALLEL_MODES:
            raise ValueError(f"expert_parallel={self.expert_parallel!r}: allowed: {list(EXPERT_PARALLEL_MODES)}")
        if self.num_experts < 1:
            raise ValueError(f"num_experts={self.num_experts}: must be >= 1")
        if not 0 <= router_index < self.num_routers:
            raise ValueError(f"router_index={router_index}: must be in [0, num_routers={self.num_routers})")
        choices = self.num_router_outputs
        if not 1 <= top_k <= choices:
            raise ValueError(f"top_k={top_k}: must be in [1, {choices}] (router outputs)")
        if self.router_groups is not None and (
                min(self.router_groups) < 0 or max(self.router_groups) >= self.num_experts):
            raise ValueError(f"router_groups={self.router_groups}: entries must be expert indices in [0, {self.num_experts})")

    @property
    def num_router_outputs(self) -> int:
        return self.num_experts if self.router_groups is None else len(self.router_groups)

    @nn.compact
    def __call__(self, x: jax.Array, router_index: int = 0, top_k: Optional[int] = None, top_p: float = 0.0) -> jax.Array:
        top_k = self.top_k if not top_k else top_k
        self._check(router_index, top_k)
        _, s, d = x.shape
        e, m, outputs = self.num_experts, self.expert_dim, self.num_router_outputs
        router = self.param("router", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed", None)),
                            (self.num_routers, d, outputs), jnp.float32)
        w = expert_params(self, e, d, m)
        logits = einsum("bsd,de->bse", x.astype(jnp.float32), router[router_index],
                        injected_dot_general(self.dot_general_provider, "router"))
        routing = route(logits, top_k, top_p, self.renormalize_gates)
        sow_router_losses(self, routing, self.balance_weight, self.z_loss_weight, self.entropy_weight)
        if self.router_groups is not None:
            routing = merge_duplicate_choices(
                routing._replace(expert_index=jnp.asarray(self.router_groups, jnp.int32)[routing.expert_index]))
        self._sow_stats(routing, router_index)

        x = x.astype(self.dtype)
        capacity = expert_capacity(s, e, top_k, self.capacity_factor)  # top-p: sized for top_k choices
        if self.dispatch == "dense":
            return moe_dense_path(x, routing, w, self._dot_generals())
        if self.dispatch == "ragged":
            return moe_ragged_path(x, routing, w)
        if self.dispatch == "sorted":
            return moe_sorted_path(x, routing, w, self._dot_generals())
        return moe_capacity_path(x, routing, w, capacity, self.dispatch, self._dot_generals(),
                                 expert_parallel=self.expert_parallel == "auto")

    def _dot_generals(self):
        """The `expert` group's dot_general for each of the two expert kernels (one module each)."""
        return (resolve_dot_general(self.dot_general_provider, "expert"),
                resolve_dot_general(self.dot_general_provider, "expert"))

    def _sow_stats(self, routing: Routing, router_index: int):
        if not self.is_mutable_collection(MOE_STATS_COLLECTION):
            return
        e = self.num_experts
        assigned = jax.nn.one_hot(routing.expert_index, e) * routing.valid[..., None]  # [B, S, K, E]
        self.sow(MOE_STATS_COLLECTION, f"router{router_index}", {
            "expert_tokens": assigned.sum((1, 2)),  # [B, E] assignments per example and expert
            "experts_per_token": routing.valid.sum(-1).astype(jnp.float32).mean(-1),  # [B]
            "gate_sum": (assigned * routing.gate[..., None]).sum((1, 2)),  # [B, E] summed gate weight
            "logits": routing.logits,  # [B, S, router outputs]
        })

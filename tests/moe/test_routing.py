"""Routing rules, capacity, dispatch/combine equivalence and the auxiliary losses of effjax.models.moe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import moe
from effjax.models.layers import AUX_LOSS_COLLECTION


# jitted once per shape: far fewer compilations than op-by-op dispatch
capacity_path = jax.jit(moe.moe_capacity_path, static_argnums=(3, 4))
dense_path = jax.jit(moe.moe_dense_path)
ragged_path = jax.jit(moe.moe_ragged_path)
sorted_path = jax.jit(moe.moe_sorted_path, static_argnames="tile")
top_k = jax.jit(moe.top_k_routing, static_argnums=(1, 2))
top_p = jax.jit(moe.top_p_routing, static_argnums=(1, 2))
assign_slots = jax.jit(moe.assign_slots, static_argnums=(1, 2))


def _logits(shape, seed=0, scale=2.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape)


def _weights(e=6, d=8, m=12, seed=1):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return moe.ExpertWeights(0.3 * jax.random.normal(k[0], (e, d, m)), 0.1 * jax.random.normal(k[1], (e, m)),
                             0.3 * jax.random.normal(k[2], (e, m, d)), 0.1 * jax.random.normal(k[3], (e, d)))


def test_top_k_picks_the_k_most_probable_experts():
    logits = _logits((3, 10, 6))
    r = top_k(logits, 2)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    expected = np.argsort(-probs, axis=-1)[..., :2]
    np.testing.assert_array_equal(np.sort(np.asarray(r.expert_index), -1), np.sort(expected, -1))
    np.testing.assert_allclose(np.asarray(r.gate), np.take_along_axis(probs, np.asarray(r.expert_index), -1), rtol=1e-6)
    renorm = top_k(logits, 2, True)
    np.testing.assert_allclose(np.asarray(renorm.gate).sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        moe.top_k_routing(logits, 7)  # noqa


@pytest.mark.parametrize("p", [0.2, 0.4, 0.7, 0.95])
def test_top_p_keeps_the_smallest_prefix_reaching_p(p):
    logits = _logits((4, 16, 8), seed=3)
    r = top_p(logits, p)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    valid, index = np.asarray(r.valid), np.asarray(r.expert_index)
    for g in range(4):
        for s in range(16):
            chosen = index[g, s][valid[g, s]]
            order = np.argsort(-probs[g, s])
            n = len(chosen)
            assert n >= 1
            np.testing.assert_array_equal(chosen, order[:n])
            assert probs[g, s, chosen].sum() >= p - 1e-6  # reaches p ...
            assert n == 1 or probs[g, s, chosen[:-1]].sum() < p  # ... and no smaller prefix does
    assert np.all(np.asarray(r.gate)[~valid] == 0)


def test_top_p_uses_more_experts_for_flatter_routers():
    sharp = top_p(_logits((1, 64, 8), scale=6.0), 0.5)
    flat = top_p(_logits((1, 64, 8), scale=0.3), 0.5)
    assert np.asarray(flat.valid).sum() > np.asarray(sharp.valid).sum()


def test_capacity_serves_first_choices_first_and_drops_the_rest():
    # every token's first choice is expert 0 and its second is expert 1; capacity 3
    logits = jnp.tile(jnp.array([3.0, 2.0, 0.0, 0.0]), (1, 5, 1))
    r = top_k(logits, 2)
    slot, kept = assign_slots(r, 4, 3)
    kept = np.asarray(kept)
    np.testing.assert_array_equal(kept[0, :, 0], [True, True, True, False, False])
    np.testing.assert_array_equal(kept[0, :, 1], [True, True, True, False, False])
    np.testing.assert_array_equal(np.asarray(slot)[0, :3, 0], [0, 1, 2])
    np.testing.assert_array_equal(np.asarray(slot)[0, :3, 1], [3, 4, 5])
    assert np.all(np.asarray(slot)[0, 3:] == 4 * 3)

    # a second choice never takes a slot a later token's first choice needed
    logits = jnp.array([[[2.0, 3.0, 0.0], [3.0, 0.0, 2.0], [3.0, 2.0, 0.0]]])
    slot, kept = assign_slots(top_k(logits, 2), 3, 2)
    # expert 0: token0's 2nd choice competes with tokens 1 and 2's 1st choices -> dropped
    assert bool(np.asarray(kept)[0, 1, 0]) and bool(np.asarray(kept)[0, 2, 0]) and not bool(np.asarray(kept)[0, 0, 1])


def test_slots_are_unique_and_within_capacity():
    r = top_p(_logits((3, 20, 6), seed=5, scale=0.5), 0.6)
    slot, kept = assign_slots(r, 6, 4)
    slot, kept = np.asarray(slot), np.asarray(kept)
    for g in range(3):
        used = slot[g][kept[g]]
        assert len(np.unique(used)) == len(used)
        assert np.all(used < 6 * 4)
        experts = np.asarray(r.expert_index)[g][kept[g]]
        np.testing.assert_array_equal(used // 4, experts)


@pytest.mark.parametrize("rule", ["top_k", "top_p"])
@pytest.mark.parametrize("capacity", [2, 5])
def test_einsum_and_gather_dispatch_agree(rule, capacity):
    x = jax.random.normal(jax.random.PRNGKey(7), (3, 10, 8))
    logits = _logits((3, 10, 6), seed=2, scale=1.0)
    r = top_k(logits, 2) if rule == "top_k" else top_p(logits, 0.5)
    w = _weights()
    a = capacity_path(x, r, w, capacity, "einsum")
    b = capacity_path(x, r, w, capacity, "gather")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("rule", ["top_k", "top_p"])
def test_dropless_paths_match_every_expert_reference(rule):
    x = jax.random.normal(jax.random.PRNGKey(8), (2, 12, 8))
    logits = _logits((2, 12, 6), seed=4, scale=1.0)
    r = top_k(logits, 2) if rule == "top_k" else top_p(logits, 0.6)
    w = _weights()
    reference = np.asarray(dense_path(x, r, w))
    capacity = moe.expert_capacity(12, 6, 2, capacity_factor=0.0)
    assert capacity == 12
    for method in ("einsum", "gather"):
        np.testing.assert_allclose(np.asarray(capacity_path(x, r, w, capacity, method)), reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ragged_path(x, r, w)), reference, atol=1e-5)
    for tile in (1, 3, 8, 128):
        np.testing.assert_allclose(np.asarray(sorted_path(x, r, w, tile=tile)), reference, atol=1e-5, err_msg=tile)


def test_sorted_layout_groups_every_valid_choice_by_expert_in_whole_tiles():
    logits = _logits((3, 10, 6), seed=5, scale=2.0)
    r = top_p(logits, 0.7)  # a varying number of valid choices per token
    tile = 4
    layout = jax.jit(moe.sorted_layout, static_argnums=(1, 2))(r, 6, tile)
    row, row_token, row_choice, tile_expert = (np.asarray(a) for a in
                                               (layout.row, layout.row_token, layout.row_choice, layout.tile_expert))
    experts, valid = np.asarray(r.expert_index), np.asarray(r.valid)
    rows = row_token.shape[0]
    assert rows % tile == 0 and rows // tile == -(-experts.size // tile) + 6 - 1
    np.testing.assert_array_equal(row[~valid], rows)
    used = row[valid]
    assert len(set(used.tolist())) == used.size  # one row per choice
    np.testing.assert_array_equal(tile_expert[used // tile], experts[valid])  # each choice in its expert's tile
    tokens = np.broadcast_to(np.arange(30).reshape(3, 10, 1), experts.shape)
    np.testing.assert_array_equal(row_token[used], tokens[valid])
    assert np.all(row_token[np.setdiff1d(np.arange(rows), used)] == 30)  # padding rows read the zero token
    np.testing.assert_array_equal(row_choice[used], np.flatnonzero(valid.reshape(-1)))  # the inverse of `row`
    assert np.all(row_choice[np.setdiff1d(np.arange(rows + 1), used)] == experts.size)
    assert np.all(np.diff(tile_expert) >= 0)  # tiles in expert order
    # token-major order within an expert
    for e in range(6):
        sel = valid & (experts == e)
        assert np.all(np.diff(row[sel]) == 1)
        if sel.any():
            assert row[sel].min() % tile == 0


def test_sorted_path_gradients_match_the_dense_reference():
    x = jax.random.normal(jax.random.PRNGKey(10), (2, 9, 8))
    logits = _logits((2, 9, 6), seed=6, scale=1.0)
    w = _weights()

    def loss(path, x, w):
        r = moe.top_k_routing(jnp.einsum("gsd,de->gse", x, logits[0, :8]), 2)
        return jnp.sum(path(x, r, w) ** 2)

    ref = jax.jit(jax.grad(lambda x, w: loss(moe.moe_dense_path, x, w), argnums=(0, 1)))(x, w)
    got = jax.jit(jax.grad(lambda x, w: loss(lambda *a: moe.moe_sorted_path(*a, tile=4), x, w), argnums=(0, 1)))(x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_gather_rows_gradient_is_the_plain_gathers():
    table = jax.random.normal(jax.random.PRNGKey(4), (6, 3))
    index = jnp.array([[0, 2], [2, 4], [1, 3]])  # row 2 read twice, row 5 never
    inverse = jnp.array([[0, 6], [4, 6], [1, 2], [5, 6], [3, 6], [6, 6]])  # flat positions reading each row; 6: none
    weights = jax.random.normal(jax.random.PRNGKey(5), index.shape + (3,))
    got = jax.grad(lambda t: jnp.sum(moe.gather_rows(t, index, inverse) * weights))(table)
    want = jax.grad(lambda t: jnp.sum(t[index] * weights))(table)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_sorted_path_gradients_match_the_dense_reference_under_top_p():
    x = jax.random.normal(jax.random.PRNGKey(11), (2, 9, 8))
    w = _weights()
    router = _logits((8, 6), seed=7, scale=1.0)

    def loss(path, x, w):
        r = top_p(jnp.einsum("gsd,de->gse", x, router), 0.6)  # tokens with one, two or more valid choices
        return jnp.sum(path(x, r, w) ** 2)

    ref = jax.jit(jax.grad(lambda x, w: loss(moe.moe_dense_path, x, w), argnums=(0, 1)))(x, w)
    got = jax.jit(jax.grad(lambda x, w: loss(lambda *a: moe.moe_sorted_path(*a, tile=4), x, w), argnums=(0, 1)))(x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_layer_with_sorted_dispatch_matches_dense_dispatch():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 8))
    dense = moe.MoeMlp(num_experts=4, expert_dim=8, top_k=2, dispatch="dense")
    params = dense.init({"params": jax.random.PRNGKey(1)}, x)["params"]
    sorted_layer = moe.MoeMlp(num_experts=4, expert_dim=8, top_k=2, dispatch="sorted")
    np.testing.assert_allclose(np.asarray(sorted_layer.apply({"params": params}, x)),
                               np.asarray(dense.apply({"params": params}, x)), atol=1e-5)


def test_dropped_tokens_get_zero_output():
    x = jax.random.normal(jax.random.PRNGKey(9), (1, 6, 8))
    logits = jnp.tile(jnp.array([5.0, 0.0, 0.0, 0.0, 0.0, 0.0]), (1, 6, 1))
    r = top_k(logits, 1)
    out = np.asarray(capacity_path(x, r, _weights(), 2, "gather"))
    assert np.all(np.abs(out[0, :2]).sum(-1) > 0)
    np.testing.assert_array_equal(out[0, 2:], 0.0)


def test_expert_capacity_formula():
    assert moe.expert_capacity(65, 8, 2, 1.25) == 21  # ceil(1.25 * 65 * 2 / 8)
    assert moe.expert_capacity(65, 8, 2, 100.0) == 65  # never more than the group
    assert moe.expert_capacity(65, 8, 2, 0.0) == 65  # dropless


def test_losses_at_uniform_routing_and_their_formulas():
    uniform = top_k(jnp.zeros((1, 8, 4)), 1)
    # all tokens to expert 0 (lax.top_k breaks ties low): f = (1,0,0,0), P = 1/4 each -> E * 1/4 = 1
    np.testing.assert_allclose(float(moe.load_balance_loss(uniform)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(moe.router_entropy(uniform.probs)), np.log(4), rtol=1e-6)
    logits = _logits((2, 5, 4))
    expected = np.mean(np.log(np.exp(np.asarray(logits, np.float64)).sum(-1)) ** 2)
    np.testing.assert_allclose(float(moe.router_z_loss(logits)), expected, rtol=1e-5)
    collapsed = top_k(jnp.tile(jnp.array([8.0, 0, 0, 0]), (1, 8, 1)), 1)
    assert float(moe.load_balance_loss(collapsed)) > 3.5  # ~E when one expert takes everything


def test_layer_sows_weighted_losses_and_validates_arguments():
    layer = moe.MoeMlp(num_experts=4, expert_dim=8, num_routers=2, top_k=2, balance_weight=0.5, z_loss_weight=0.25,
                       entropy_weight=0.125)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
    params = layer.init({"params": jax.random.PRNGKey(1)}, x)["params"]
    y, aux = layer.apply({"params": params}, x, 1, mutable=[AUX_LOSS_COLLECTION])
    assert y.shape == x.shape
    logits = jnp.einsum("bsd,de->bse", x, params["router"].value[1])
    r = top_k(logits, 2)
    losses = aux[AUX_LOSS_COLLECTION]
    np.testing.assert_allclose(float(losses["balance_loss"][0]), 0.5 * float(moe.load_balance_loss(r)), rtol=1e-5)
    np.testing.assert_allclose(float(losses["router_z_loss"][0]), 0.25 * float(moe.router_z_loss(logits)), rtol=1e-5)
    np.testing.assert_allclose(float(losses["router_entropy"][0]), 0.125 * float(moe.router_entropy(r.probs)), rtol=1e-5)
    with pytest.raises(ValueError, match="router_index"):
        layer.apply({"params": params}, x, 2)
    with pytest.raises(ValueError, match="top_k"):
        layer.apply({"params": params}, x, 0, 5)
    with pytest.raises(ValueError, match="dispatch"):
        moe.MoeMlp(num_experts=4, expert_dim=8, dispatch="scatter").init({"params": jax.random.PRNGKey(1)}, x)


def test_expert_matmuls_go_through_the_dot_general_hook():
    calls = []

    def provider(group):
        if group != "expert":
            return None

        def counting(lhs, rhs, dimension_numbers, precision=None, **kw):
            calls.append(dimension_numbers)
            return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kw)

        return lambda: counting

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
    plain = moe.MoeMlp(num_experts=4, expert_dim=8)
    hooked = moe.MoeMlp(num_experts=4, expert_dim=8, dot_general_provider=provider)
    params = plain.init({"params": jax.random.PRNGKey(1)}, x)["params"]
    np.testing.assert_allclose(np.asarray(hooked.apply({"params": params}, x)), np.asarray(plain.apply({"params": params}, x)),
                               atol=1e-6)
    assert len(calls) == 2 and all(dn[1] != ((), ()) for dn in calls)  # batched over the expert axis


def test_duplicate_choices_merge_into_the_first():
    r = moe.Routing(jnp.array([[[1, 0, 1, 2]]]), jnp.array([[[0.4, 0.3, 0.2, 0.1]]]), jnp.array([[[True, True, True, False]]]),
                    jnp.zeros((1, 1, 3)), jnp.zeros((1, 1, 3)))
    merged = moe.merge_duplicate_choices(r)
    np.testing.assert_array_equal(np.asarray(merged.valid)[0, 0], [True, True, False, False])
    np.testing.assert_allclose(np.asarray(merged.gate)[0, 0], [0.6, 0.3, 0.0, 0.0], rtol=1e-6)

"""Expert merging (MC-SMoE) and per-expert bit allocation (MC#)."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import expert_bits, expert_merging
from effjax.models.moe import MOE_STATS_COLLECTION, MoeMlp


def _layer(e=4, d=6, m=10, seed=0):
    rng = np.random.default_rng(seed)
    return {"router": rng.normal(size=(1, d, e)), "wi": rng.normal(size=(e, d, m)), "bi": rng.normal(size=(e, m)),
            "wo": rng.normal(size=(e, m, d)), "bo": rng.normal(size=(e, d))}


def _expert_fn(layer, e, x):
    h = jax.nn.gelu(x @ layer["wi"][e] + layer["bi"][e])
    return np.asarray(h @ layer["wo"][e] + layer["bo"][e])


def test_alignment_recovers_a_hidden_unit_permutation_and_keeps_the_function():
    layer = _layer()
    perm = np.random.default_rng(1).permutation(10)
    shuffled = expert_merging.permute_expert(layer, 0, perm)
    x = np.random.default_rng(2).normal(size=(5, 6))
    np.testing.assert_allclose(_expert_fn({k: v[None] for k, v in shuffled.items()}, 0, x), _expert_fn(layer, 0, x),
                               atol=1e-6)
    layer["wi"][1], layer["bi"][1], layer["wo"][1], layer["bo"][1] = (shuffled[k] for k in ("wi", "bi", "wo", "bo"))
    found = expert_merging.alignment_permutation(expert_merging.unit_features(layer, 0),
                                                 expert_merging.unit_features(layer, 1))
    np.testing.assert_array_equal(perm[found], np.arange(10))


def test_aligned_merge_of_permuted_copies_is_exact_and_plain_average_is_not():
    layer = _layer(e=2)
    copy = expert_merging.permute_expert(layer, 0, np.random.default_rng(3).permutation(10))
    for k in ("wi", "bi", "wo", "bo"):
        layer[k][1] = copy[k]
    labels, freq = np.array([0, 0]), np.array([0.7, 0.3])
    x = np.random.default_rng(4).normal(size=(5, 6))
    aligned = expert_merging.merge_layer(layer, labels, freq, align=True, weighting="frequency")
    plain = expert_merging.merge_layer(layer, labels, freq, align=False, weighting="uniform")
    assert aligned["wi"].shape == (1, 6, 10)
    np.testing.assert_allclose(_expert_fn(aligned, 0, x), _expert_fn(layer, 0, x), atol=1e-6)
    assert np.abs(_expert_fn(plain, 0, x) - _expert_fn(layer, 0, x)).max() > 1e-2


def test_frequency_weighting_and_grouping():
    layer = _layer(e=3)
    merged = expert_merging.merge_layer(layer, np.array([0, 0, 0]), np.array([0.5, 0.3, 0.2]), align=False)
    np.testing.assert_allclose(merged["wi"][0], 0.5 * layer["wi"][0] + 0.3 * layer["wi"][1] + 0.2 * layer["wi"][2])
    # experts 0 and 2 dominate; expert 1's logits follow expert 2's
    logits = np.random.default_rng(5).normal(size=(200, 4))
    logits[:, 1] = logits[:, 2] + 0.01 * logits[:, 1]
    labels = expert_merging.group_experts(np.array([0.4, 0.1, 0.3, 0.2]), expert_merging.router_similarity(logits), 2)
    np.testing.assert_array_equal(labels, [0, 1, 1, 0 if np.corrcoef(logits[:, 3], logits[:, 0])[0, 1] >
                                           np.corrcoef(logits[:, 3], logits[:, 2])[0, 1] else 1])
    with pytest.raises(ValueError, match="num_groups"):
        expert_merging.group_experts(np.ones(4), np.eye(4), 5)


def test_merged_layer_with_rebound_router_reproduces_paired_experts():
    """Experts 2j+1 are permuted copies of 2j: merging E -> E/2 must keep the layer's function."""
    e, d, m = 4, 8, 12
    layer_module = MoeMlp(num_experts=e, expert_dim=m, top_k=2, capacity_factor=0.0, dispatch="gather")
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 10, d))
    params = jax.tree.map(np.array, nn.unbox(layer_module.init({"params": jax.random.PRNGKey(1)}, x)["params"]))
    for j in range(0, e, 2):
        copy = expert_merging.permute_expert(params, j, np.random.default_rng(j).permutation(m))
        for k in ("wi", "bi", "wo", "bo"):
            params[k][j + 1] = copy[k]
    reference, stats = jax.jit(lambda p: layer_module.apply({"params": p}, x, mutable=[MOE_STATS_COLLECTION]))(params)
    routing = expert_merging.accumulate_routing_stats([stats[MOE_STATS_COLLECTION]])
    assert list(routing) == [""] and routing[""].expert_tokens.sum() == 6 * 10 * 2
    labels = np.array([0, 0, 1, 1])
    merged = expert_merging.merge_layer(params, labels, routing[""].frequency())
    small = MoeMlp(num_experts=2, expert_dim=m, top_k=2, capacity_factor=0.0, dispatch="gather",
                   router_groups=tuple(labels.tolist()))
    out = jax.jit(lambda p: small.apply({"params": p}, x))(jax.tree.map(jnp.asarray, merged))
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference), atol=1e-5)
    # the whole-model entry point finds the layer, groups and merges it
    merged_tree, groups = expert_merging.merge_moe_params({"block1": {"moe": params}}, {"block1/moe": routing[""]}, 2)
    assert merged_tree["block1"]["moe"]["wi"].shape == (2, d, m) and len(groups) == 1 and len(groups[0]) == e


def brute_force_bits(importance, errors, bit_options, average_bits):
    """Exhaustive search (the oracle of `expert_bits.allocate_bits`; len(bit_options)^E candidates)."""
    importance, errors = np.asarray(importance, np.float64), np.asarray(errors, np.float64)
    num_experts = len(importance)
    best, best_value = None, float("inf")
    for combo in itertools.product(range(len(bit_options)), repeat=num_experts):
        if sum(bit_options[i] for i in combo) > average_bits * num_experts + 1e-9:
            continue
        value = sum(importance[e] * errors[e, i] for e, i in enumerate(combo))
        if value < best_value - 1e-15:
            best, best_value = tuple(int(bit_options[i]) for i in combo), value
    return best


def allocation_cost(importance, errors, bit_options, bits) -> float:
    index = {b: i for i, b in enumerate(bit_options)}
    return float(sum(importance[e] * errors[e, index[b]] for e, b in enumerate(bits)))


def test_bit_allocation_is_exact_against_brute_force():
    rng = np.random.default_rng(0)
    options = (2, 4, 8)
    for trial in range(6):
        importance = rng.random(6) ** 2
        errors = np.sort(rng.random((6, 3)), axis=1)[:, ::-1] * np.array([1.0, 0.2, 0.01])
        for average in (2.0, 3.0, 4.5, 8.0):
            dp = expert_bits.allocate_bits(importance, errors, options, average)
            brute = brute_force_bits(importance, errors, options, average)
            assert sum(dp) <= average * 6
            assert np.isclose(allocation_cost(importance, errors, options, dp),
                              allocation_cost(importance, errors, options, brute))
    with pytest.raises(ValueError, match="average_bits"):
        expert_bits.allocate_bits(np.ones(3), np.ones((3, 3)), options, 1.5)


def test_important_experts_get_more_bits_and_quantization_error_falls_with_bits():
    layer = _layer(e=4)
    errors = [expert_bits.expert_quantization_error(layer, 0, b) for b in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2] > 0
    errs = np.array([[expert_bits.expert_quantization_error(layer, e, b) for b in (2, 4, 8)] for e in range(4)])
    bits = expert_bits.allocate_bits(np.array([0.7, 0.2, 0.05, 0.05]), errs, (2, 4, 8), 3.0)
    assert sum(bits) <= 12 and bits[0] == max(bits) and bits[2] == bits[3] == min(bits) < bits[0]


def test_model_bits_json_round_trip(tmp_path):
    layer = _layer(e=4)
    stats = expert_merging.LayerRoutingStats(np.array([[40.0, 30.0, 20.0, 10.0]]), np.array([[20.0, 12.0, 6.0, 2.0]]),
                                             np.array([100.0]), [[]], [np.zeros((0, 4))])
    bits = expert_bits.allocate_model_bits({"block1/moe": layer}, {"block1/moe": stats}, 3.0, (2, 4))
    assert len(bits["block1/moe"]) == 4 and sum(bits["block1/moe"]) <= 12
    path = tmp_path / "bits.json"
    expert_bits.save_bits(str(path), bits, 3.0, (2, 4))
    import json

    assert json.load(open(path))["layers"]["block1/moe"] == list(bits["block1/moe"])
    quantized = expert_bits.fake_quantize_experts({"block1/moe": layer}, bits)["block1/moe"]
    assert len(np.unique(quantized["wi"][0][:, 0])) <= 2 ** bits["block1/moe"][0]

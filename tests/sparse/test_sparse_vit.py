"""The sparse_vit preset of the elastic model: mt_vit parameters plus predictors, dense equivalence at rho = 1,
path equivalence, the random-mask baseline, capture, token pruning."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.data.specs import TaskSpec
from effjax.models.elastic_vit import ElasticViT
from effjax.subnet import SubnetConfig

TASKS = (TaskSpec("digit", "classification", 10), TaskSpec("seg", "segmentation", 3), TaskSpec("depth", "depth"))
DIMS = dict(tasks=TASKS, patch_size=2, hidden_dim=32, num_layers=2, num_heads=4, mlp_dim=48, decoder_dim=16)


def _apply(model, params, images, **kwargs):
    """model.apply under jit (eager Flax dispatch is slow on a busy CPU)."""
    mutable = kwargs.pop("mutable", False)
    return jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=mutable, **kwargs))(params, images)


@pytest.fixture(scope="module")
def model_and_params():
    model = ElasticViT(**DIMS, sparse_layers=(0, 1), predictor_channels=4, predictor_token_reduction=4,
                       predictor_top_coefficients=2, token_pruning_layers=(0, 1))
    images = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 2))
    params = jax.jit(lambda x: model.init({"params": jax.random.PRNGKey(1)}, x)["params"])(images)
    return model, flax.linen.unbox(params), images


def _flat(tree):
    return flax.traverse_util.flatten_dict(tree, sep="/")


def test_backbone_parameters_match_mt_vit_and_rho_one_is_mt_vit(model_and_params):
    model, params, images = model_and_params
    dense = ElasticViT(**DIMS)  # the mt_vit preset
    dense_params = flax.linen.unbox(jax.jit(lambda x: dense.init({"params": jax.random.PRNGKey(1)}, x)["params"])(images))
    ours, theirs = _flat(params), _flat(dense_params)
    assert set(theirs) <= set(ours)
    assert all(ours[p].shape == theirs[p].shape for p in theirs)
    assert all("/predictor/" in p for p in set(ours) - set(theirs))
    # mt_vit's parameters (plus any predictor) give mt_vit's outputs at rho = 1
    merged = flax.traverse_util.unflatten_dict({**ours, **theirs}, sep="/")
    ref = _apply(dense, dense_params, images)
    out = _apply(model, merged, images, subnet=SubnetConfig())
    for t in TASKS:
        np.testing.assert_allclose(out[t.name], ref[t.name], atol=1e-5)


@pytest.mark.parametrize("subnet", [SubnetConfig(attention_keep_ratio=0.3),
                                    SubnetConfig(attention_keep_ratio=0.3, token_keep_ratio=0.5)])
def test_training_and_inference_paths_agree(model_and_params, subnet):
    model, params, images = model_and_params
    masked = _apply(model, params, images, train=True, subnet=subnet)
    gathered = _apply(model, params, images, train=False, subnet=subnet)
    dense = _apply(model, params, images, subnet=SubnetConfig())
    for t in TASKS:
        np.testing.assert_allclose(masked[t.name], gathered[t.name], atol=2e-5)
        assert not np.allclose(gathered[t.name], dense[t.name], atol=1e-4)  # the knob acts
    assert gathered["seg"].shape == (3, 8, 8, 3) and gathered["depth"].shape == (3, 8, 8)


def test_random_mask_baseline_differs_from_the_predictor(model_and_params):
    model, params, images = model_and_params
    subnet = SubnetConfig(attention_keep_ratio=0.3)
    ours = _apply(model, params, images, subnet=subnet)
    rand = _apply(model.clone(mask_scores="random"), params, images, subnet=subnet)
    assert not np.allclose(ours["digit"], rand["digit"], atol=1e-4)
    assert np.isfinite(np.asarray(rand["digit"])).all()


def test_capture_sows_approximate_and_true_attention(model_and_params):
    model, params, images = model_and_params
    _, mutated = _apply(model, params, images, capture=True, mutable=["intermediates"])
    inter = mutated["intermediates"]
    for i in range(2):
        attn = inter[f"blocks_{i}"]["attention"]
        assert attn["approx_attention"][0].shape == (3, 4, 16, 17)
        np.testing.assert_allclose(attn["attention"][0].sum(-1), 1.0, atol=1e-5)
    assert inter["tokens"][0].shape == (3, 17, 32)


def test_token_pruning_keeps_the_most_attended_tokens():
    from effjax.models.token_pruning import prune_tokens, restore_tokens

    x = jnp.arange(2 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 1)
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    cls = jnp.zeros((2, 2, 5)).at[0, :, jnp.array([4, 2])].set(1.0).at[1, :, jnp.array([1, 3])].set(1.0)
    kept, kept_positions = prune_tokens(x, positions, cls, 2)
    np.testing.assert_array_equal(kept_positions, [[0, 2, 4], [0, 1, 3]])
    np.testing.assert_array_equal(kept[..., 0], [[0, 2, 4], [5, 6, 8]])
    restored = restore_tokens(jnp.zeros_like(x), kept + 100, kept_positions)
    np.testing.assert_array_equal(restored[0, :, 0], [100, 0, 102, 0, 104])


def test_bad_knobs_are_one_line_errors(model_and_params):
    model, params, images = model_and_params
    with pytest.raises(ValueError, match="no MoE blocks"):
        model.apply({"params": params}, images, subnet=SubnetConfig(moe_top_k=1))
    with pytest.raises(ValueError, match="prunes no tokens"):
        model.clone(token_pruning_layers=()).apply({"params": params}, images, subnet=SubnetConfig(token_keep_ratio=0.5))
    with pytest.raises(ValueError, match="attention_path"):
        model.clone(attention_path="sparse").apply({"params": params}, images)
    with pytest.raises(ValueError, match="mask_scores"):
        model.clone(mask_scores="oracle").apply({"params": params}, images)
    with pytest.raises(ValueError, match="token_pruning_layers"):
        model.clone(token_pruning_layers=(5,)).apply({"params": params}, images)

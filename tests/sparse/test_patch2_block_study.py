"""The shapes configs at patch 2 (the block-vs-token study's long sequence) and the sort-free top-k key mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.config.load import load_config
from effjax.models.elastic_vit import kept_key_mask, top_count_mask


@pytest.mark.parametrize("spec, block", [("configs/shapes_vit.py:patch=2", 0),
                                         ("configs/sparsifiner_shapes.py:predictor,patch=2", 0),
                                         ("configs/sparsifiner_shapes.py:finetune,rho=0.25,patch=2,block=16", 16)])
def test_patch2_configs_have_257_tokens(spec, block):
    c = load_config(spec)
    assert (c.data.image_size // c.model.patch_size) ** 2 + 1 == 257
    assert c.model.attention_block == block


def test_default_shapes_configs_unchanged():
    for spec in ("configs/shapes_vit.py", "configs/sparsifiner_shapes.py:finetune"):
        c = load_config(spec)
        assert c.model.patch_size == 4 and c.model.attention_block == 0
    assert load_config("configs/shapes_vit.py").train.num_steps == 1500


@pytest.mark.parametrize("spec", ["configs/shapes_vit.py:patch=3", "configs/sparsifiner_shapes.py:finetune,block=12"])
def test_bad_patch_or_block_refused(spec):
    with pytest.raises(ValueError):
        load_config(spec)


def _argsort_mask(scores, count):
    rank = jnp.argsort(jnp.argsort(-scores, axis=-1, stable=True), axis=-1)
    return rank < count


@jax.jit
def _both_masks(scores, counts):
    """(top_count_mask, argsort ranking) for every input and count, in one compiled call."""
    x = jnp.broadcast_to(scores[:, None], scores.shape[:1] + counts.shape + scores.shape[1:])
    c = counts.reshape((1, -1) + (1,) * (scores.ndim - 1))
    return top_count_mask(x, c), _argsort_mask(x, c)


def test_top_count_mask_matches_stable_argsort_ranking():
    scores = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8, 33))
    tied = jnp.round(scores * 2) / 2  # many ties (and -0.0 next to 0.0): the lower key index goes first
    ours, reference = _both_masks(jnp.stack([scores, tied, jnp.zeros_like(scores), -jnp.abs(scores)]),
                                  jnp.array([1, 5, 9, 33]))
    assert (np.asarray(ours) == np.asarray(reference)).all()


def test_kept_key_mask_with_traced_keep_ratio():
    scores = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 16, 17))
    masks = np.asarray(jax.jit(jax.vmap(lambda r: kept_key_mask(scores, r)))(jnp.array([0.25, 0.5, 1.0])))
    top5 = np.argsort(-np.asarray(scores), axis=-1, kind="stable")[..., :5]
    assert np.take_along_axis(masks[0, :, :, 1:], top5, axis=-1).all()
    for mask, count in zip(masks, (5, 9, 17)):
        assert mask[:, :, 0].all() and (mask[:, :, 1:].sum(-1) == count).all()

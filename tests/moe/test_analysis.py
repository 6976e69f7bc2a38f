"""The evidence script's re-derivations agree with the model: top-p expert counts from router logits
(experiments/moe/analyze.py, used for per-token hardness) and the patch order of per-patch losses."""

import numpy as np
import pytest

from effjax.models.moe import top_p_routing
from effjax.models.vit import patchify
from experiments.moe.analyze import _per_patch, top_p_counts


@pytest.mark.parametrize("p", [0.1, 0.4, 0.9])
def test_top_p_counts_match_routing(p):
    logits = np.random.default_rng(0).normal(size=(4, 17, 8)).astype(np.float32) * 3
    expected = np.asarray(top_p_routing(logits, p).valid.sum(-1))
    np.testing.assert_array_equal(top_p_counts(logits, p), expected)


def test_per_patch_follows_patchify_token_order():
    pixels = np.random.default_rng(1).normal(size=(2, 8, 12))
    expected = np.asarray(patchify(pixels[..., None], 4)).mean(-1)
    np.testing.assert_allclose(_per_patch(pixels, 4), expected, rtol=1e-6)

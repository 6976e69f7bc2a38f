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


@pytest.mark.parametrize("kind,classes", [("classification", 4), ("segmentation", 4), ("depth", 0)])
def test_per_example_sums_reproduce_the_trainer_metric(kind, classes):
    """The paired bootstrap's per-example statistics, summed over all examples, give the trainer's metric."""
    from effjax.data.specs import TaskSpec
    from effjax.train import losses
    from experiments.moe.analyze import metric_from_sums, per_example_sums

    rng = np.random.default_rng(2)
    task = TaskSpec("t", kind, num_classes=classes)
    if kind == "classification":
        pred, target = rng.normal(size=(40, classes)), rng.integers(0, classes, 40)
    elif kind == "segmentation":
        pred, target = rng.normal(size=(40, 6, 6, classes)), rng.integers(0, classes, (40, 6, 6))
    else:
        pred, target = rng.normal(size=(40, 6, 6)), rng.normal(size=(40, 6, 6))
    sums = losses.metric_sums(task, pred.astype(np.float32), target, np.ones(40, np.float32))
    expected = losses.finalize_metric(task, {k: np.asarray(v) for k, v in sums.items()})
    per = per_example_sums(task, pred, target)
    got = metric_from_sums(task, per[None], int(np.prod(target.shape[1:])) if kind == "depth" else 1)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)

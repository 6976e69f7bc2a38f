"""The two Sparsifiner stages end to end on tiny digits: dense -> predictor distillation -> masked fine-tuning."""

import os

import flax
import jax
import numpy as np
import pytest

from effjax.config.load import load_config
from effjax.train.trainer import train_and_evaluate

pytestmark = pytest.mark.slow  # three trainer runs: about a minute alone, several on a busy machine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(spec):
    c = load_config(os.path.join(REPO, "configs", spec))
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    return c


def _flat(result):
    return flax.traverse_util.flatten_dict(jax.device_get(result.state.params), sep="/")


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dense"))
    return workdir, train_and_evaluate(_config("quickstart.py:tiny"), workdir, devices=jax.devices()[:1])


def test_predictor_stage_trains_only_the_predictor_then_finetune_only_the_backbone(dense_run, tmp_path):
    dense_dir, dense = dense_run
    c1 = _config("sparsifiner_digits.py:predictor,tiny")
    c1.train.init_from = dense_dir
    c1.train.num_steps, c1.log.every_steps = 12, 1
    s1 = train_and_evaluate(c1, str(tmp_path / "s1"), devices=jax.devices()[:1])
    before, after = _flat(dense), _flat(s1)
    for path, value in after.items():
        if "predictor" in path:
            continue
        np.testing.assert_array_equal(value, before[path], err_msg=f"stage 1 changed backbone parameter {path}")
    # the distillation loss falls while the predictors learn
    losses = [s1.train_losses[s] for s in sorted(s1.train_losses)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert int(s1.state.skipped_total) == 0

    c2 = _config("sparsifiner_digits.py:finetune,rho=0.3,tiny")
    c2.train.init_from = str(tmp_path / "s1")
    s2 = train_and_evaluate(c2, str(tmp_path / "s2"), devices=jax.devices()[:1])
    tuned = _flat(s2)
    changed = [p for p in tuned if not np.array_equal(tuned[p], after[p])]
    assert changed and not any("predictor" in p for p in changed), changed
    assert int(s2.state.skipped_total) == 0
    assert 0.0 <= s2.metrics["test"]["digit"] <= 1.0


def test_finetune_without_a_teacher_is_a_one_line_error(tmp_path):
    c = _config("sparsifiner_digits.py:finetune,tiny")
    with pytest.raises(ValueError, match="teacher"):
        train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])

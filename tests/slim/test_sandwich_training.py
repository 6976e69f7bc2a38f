"""End to end through the trainer: objective "sandwich" on slim_vit, and a resumed run replays bit for bit (slow)."""

import jax
import numpy as np
import pytest

from configs.slim_vit import get_config
from effjax.train import trainer


def _tiny():
    c = get_config("digits,tiny")
    c.model.hidden_dim, c.model.num_heads, c.model.mlp_dim, c.model.decoder_dim, c.model.num_layers = 16, 2, 16, 16, 1
    c.model.patch_size = 4
    c.model.width_menu = (0.5, 1.0)
    c.train.num_steps = 4
    c.eval.every_steps = c.checkpoint.every_steps = 2
    c.checkpoint.async_save = False
    return c


def assert_resume_is_exact(make_config, tmp_path):
    """Trains `make_config()` straight through, and again halted after step 2 then resumed in the same workdir;
    the final parameters must be bit-identical. Returns the straight run's result."""
    straight = trainer.train_and_evaluate(make_config(), str(tmp_path / "straight"), devices=jax.devices()[:1])
    halted = make_config()
    halted.train.halt_after_steps = 2
    first = trainer.train_and_evaluate(halted, str(tmp_path / "resumed"), devices=jax.devices()[:1])
    assert first.interrupted and int(first.state.step) == 2
    resumed = trainer.train_and_evaluate(make_config(), str(tmp_path / "resumed"), devices=jax.devices()[:1])
    assert resumed.start_step == 2
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    return straight


@pytest.mark.slow
def test_sandwich_trains_and_resumes_exactly(tmp_path):
    straight = assert_resume_is_exact(_tiny, tmp_path)
    assert set(straight.metrics["test"]) == {"digit", "parity", "ge5"}

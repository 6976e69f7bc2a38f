import glob
import os

import jax
import numpy as np
import pytest

from effjax.train.trainer import TrainingDiverged, train_and_evaluate

from tests.foundation.helpers import tiny


def _params(result):
    return jax.tree.map(np.asarray, jax.device_get(result.state.params))


@pytest.mark.parametrize("name, metric_ranges", [
    ("quickstart", {"digit": (0.2, 1.0), "parity": (0.5, 1.0), "ge5": (0.5, 1.0)}),
    ("shapes_vit", {"segmentation": (0.1, 1.0), "depth": (0.0, 4.0), "count": (0.0, 1.0)}),
])
def test_tiny_train_and_eval_each_dataset(tmp_path, name, metric_ranges):
    c = tiny(name)
    result = train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
    losses = [result.train_losses[s] for s in sorted(result.train_losses)]
    assert losses[-1] < losses[0], losses
    assert set(result.metrics) == {"val", "test"}
    for task, (lo, hi) in metric_ranges.items():
        assert lo <= result.metrics["test"][task] <= hi, (task, result.metrics)
    assert int(result.state.step) == c.train.num_steps and int(result.state.skipped_total) == 0


def _sgd(c):
    # Adam divides by sqrt(v): for parameters whose gradients are ~0 it turns float
    # summation-order noise into full-size steps, so compare parameters under SGD.
    c.train.optimizer, c.train.learning_rate = "sgd", 0.05
    return c


def test_sharded_training_matches_single_device(tmp_path):
    single = train_and_evaluate(_sgd(tiny()), str(tmp_path / "one"), devices=jax.devices()[:1])
    c8 = _sgd(tiny())
    c8.mesh.data, c8.mesh.fsdp = 2, 4
    sharded = train_and_evaluate(c8, str(tmp_path / "eight"))
    spec = sharded.state.params["blocks_0"]["mlp"]["wi"]["kernel"].sharding.spec
    assert "fsdp" in str(spec), spec  # parameters really are sharded over fsdp
    steps = sorted(single.train_losses)
    np.testing.assert_allclose([sharded.train_losses[s] for s in steps], [single.train_losses[s] for s in steps], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), _params(single), _params(sharded))


def test_stop_and_resume_is_bit_identical(tmp_path):
    straight = train_and_evaluate(tiny(), str(tmp_path / "straight"), devices=jax.devices()[:1])
    c = tiny()
    c.train.halt_after_steps = 7  # not a checkpoint multiple: the halt writes its own step
    lowered = []  # the main job starts compiling the search's programs once the train step is traced
    first = train_and_evaluate(c, str(tmp_path / "resumed"), devices=jax.devices()[:1],
                               on_lowered=lambda: lowered.append(True))
    assert first.interrupted and int(first.state.step) == 7 and lowered == [True]
    second = train_and_evaluate(c, str(tmp_path / "resumed"), devices=jax.devices()[:1])
    assert second.start_step == 7 and int(second.state.step) == 14
    third = train_and_evaluate(c, str(tmp_path / "resumed"), devices=jax.devices()[:1])
    assert third.start_step == 14 and not third.interrupted
    jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(third))
    assert straight.metrics["test"] == third.metrics["test"]


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    c = tiny()
    c.train.halt_after_steps = 10
    c.checkpoint.every_steps = 5
    train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
    newest = os.path.join(str(tmp_path), "checkpoints", "10", "state")
    victims = [f for f in glob.glob(os.path.join(newest, "**", "*"), recursive=True)
               if os.path.isfile(f) and os.path.getsize(f) > 1]
    assert victims
    for f in victims:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 3)
    c.train.halt_after_steps = 0
    with pytest.warns(RuntimeWarning, match="checkpoint step 10 .* falling back to step 5"):
        resumed = train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
    assert resumed.start_step == 5 and int(resumed.state.step) == c.train.num_steps
    assert os.listdir(os.path.join(str(tmp_path), "checkpoints_corrupt"))  # moved aside, not deleted


def test_tensorboard_events_hold_expected_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    c = tiny()
    c.profile_steps = 3
    train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
    acc = EventAccumulator(os.path.join(str(tmp_path), "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"train/loss", "train/learning_rate", "train/grad_norm", "train/step_time_s", "train/examples_per_s",
                "train/tflops_per_s", "train/skipped_steps", "train/digit/loss", "val/digit/accuracy",
                "val/parity/accuracy", "val/ge5/accuracy", "test/digit/accuracy"}
    assert expected <= tags, expected - tags
    assert all(t.split("/")[0] in ("train", "val", "test") for t in tags), tags  # one scheme: <split>/<task>/<metric>
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(5, c.train.num_steps + 1, 5))
    assert all(e.value > 0 for e in acc.Scalars("train/tflops_per_s"))
    sessions = glob.glob(os.path.join(str(tmp_path), "tensorboard", "**", "events.out.*"), recursive=True)
    assert len([s for s in sessions if os.sep + "hparams" in s]) == 1  # one hparams session (events file)
    assert glob.glob(os.path.join(str(tmp_path), "profile", "**", "*.xplane.pb"), recursive=True)


def test_nan_learning_rate_stops_with_clear_message(tmp_path):
    c = tiny()
    c.train.learning_rate = 1e30  # finite, but the first update overflows to inf/NaN
    c.train.warmup_steps = 0
    c.train.grad_clip_norm = 0.0
    c.train.max_skipped_steps = 3
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])

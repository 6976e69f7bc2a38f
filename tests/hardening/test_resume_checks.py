"""Resuming with another schedule, below the checkpoint's step, and rerunning a finished workdir."""

import os
import shutil

import jax
import pytest

from effjax.train.schedule_record import RECORD_FILE
from effjax.train.trainer import train_and_evaluate
from effjax.config.validate import ConfigError
from tests.foundation.helpers import tiny


def _config(num_steps=6):
    c = tiny()
    c.train.num_steps, c.checkpoint.every_steps, c.log.every_steps, c.eval.every_steps = num_steps, 3, 3, 1000
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finished"))
    first = train_and_evaluate(_config(), workdir, devices=jax.devices()[:1])
    with open(os.path.join(workdir, "final_loss.txt"), "w") as f:
        f.write(repr(first.train_losses[6]))
    return workdir


def _copy(finished, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(finished, workdir)
    return workdir


def test_longer_schedule_on_resume_is_refused_naming_the_fields(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    record = open(os.path.join(workdir, RECORD_FILE)).read()
    c = _config(num_steps=9)
    c.train.learning_rate = 1e-2
    with pytest.raises(ConfigError, match=r"resuming step 6 of .* with a different learning-rate schedule "
                                          r"\(train.num_steps: 6 -> 9; train.learning_rate: 0.003 -> 0.01\); "
                                          r"set --config.train.on_schedule_change=new"):
        train_and_evaluate(c, workdir, devices=jax.devices()[:1])
    assert open(os.path.join(workdir, RECORD_FILE)).read() == record


@pytest.mark.slow
def test_on_schedule_change_new_follows_the_new_schedule(finished, tmp_path, caplog):
    workdir = _copy(finished, tmp_path)
    c = _config(num_steps=9)
    c.train.on_schedule_change = "new"
    result = train_and_evaluate(c, workdir, devices=jax.devices()[:1])
    assert result.start_step == 6 and int(result.state.step) == 9
    assert "resuming step 6 with a new learning-rate schedule (train.num_steps: 6 -> 9)" in caplog.text
    again = train_and_evaluate(_config(num_steps=9), workdir, devices=jax.devices()[:1])  # recorded: no refusal now
    assert again.start_step == 9


@pytest.mark.slow
def test_constant_schedule_may_extend_num_steps(tmp_path):
    c = _config(num_steps=3)
    c.train.schedule = "constant"
    train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
    c.train.num_steps = 6  # the constant schedule does not depend on num_steps
    assert train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1]).start_step == 3


def test_num_steps_below_the_checkpoint_is_refused(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    with pytest.raises(ConfigError, match=r"config.train.num_steps=4: below step 6 of the checkpoint in .*; "
                                          r"set num_steps >= 6 or use a new --workdir"):
        train_and_evaluate(_config(num_steps=4), workdir, devices=jax.devices()[:1])


def test_rerun_of_a_finished_workdir_logs_nothing_twice_and_keeps_the_final_loss(finished, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = _copy(finished, tmp_path)
    result = train_and_evaluate(_config(), workdir, devices=jax.devices()[:1])
    assert result.start_step == 6 and not result.interrupted and result.metrics["test"]
    assert result.train_losses == {6: float(open(os.path.join(workdir, "final_loss.txt")).read())}
    acc = EventAccumulator(os.path.join(workdir, "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("test/digit/accuracy")] == [6]

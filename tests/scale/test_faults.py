"""Kill-and-resume, SIGTERM and damaged-checkpoint behaviour of real effjax processes."""

import os
import random
import signal
import subprocess

import jax
import numpy as np
import pytest

from effjax.train.checkpoint import Checkpointer
from effjax.train.trainer import train_and_evaluate

from tests.scale.procs import REPO, checkpoint_steps, command, env_with_devices, run, wait_for
from tests.foundation.helpers import tiny

LONG = ["--config.train.num_steps=60", "--config.checkpoint.every_steps=3", "--config.log.every_steps=3",
        "--config.eval.every_steps=1000"]


def _params_of(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3, async_save=False)
    step, params = ckpt.latest_params()
    ckpt.close()
    return step, params


@pytest.mark.slow  # 4 training subprocesses (150 s); the default suite keeps the SIGTERM and resume tests
def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path):
    workdir = str(tmp_path / "killed")
    rng = random.Random(1234)
    kills = 0
    for _ in range(3):
        done = checkpoint_steps(workdir)
        target = (done[-1] if done else 0) + rng.randint(2, 12)
        proc = subprocess.Popen(command(workdir, *LONG), cwd=REPO, env=env_with_devices(8),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reached = wait_for(lambda: any(s >= target for s in checkpoint_steps(workdir)) or proc.poll() is not None, 180)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert reached
    assert kills == 3
    summary = run(workdir, *LONG)
    assert summary["steps"] == 60 and 0 < summary["start_step"] < 60
    c = tiny()
    c.train.num_steps, c.checkpoint.every_steps, c.log.every_steps, c.eval.every_steps = 60, 3, 3, 1000
    straight = train_and_evaluate(c, str(tmp_path / "straight"))  # same 8 simulated devices as the subprocesses
    step, resumed = _params_of(workdir)
    assert step == 60
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight.state.params), resumed)


def test_sigterm_saves_exits_zero_and_next_launch_continues(tmp_path):
    workdir = str(tmp_path)
    args = ["--config.train.num_steps=100000", "--config.checkpoint.every_steps=50", "--config.eval.every_steps=100000"]
    proc = subprocess.Popen(command(workdir, *args), cwd=REPO, env=env_with_devices(8),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: checkpoint_steps(workdir), 180)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM received: saved step" in err
    saved = checkpoint_steps(workdir)[-1]
    assert saved % 50 != 0 or saved > 50  # the SIGTERM save is its own step, not only the periodic one
    summary = run(workdir, *args, "--config.train.halt_after_steps=5")
    assert summary["start_step"] == saved and summary["steps"] == saved + 5

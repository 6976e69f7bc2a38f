"""Two JAX processes on localhost (4 CPU devices each) train like one process with 8 devices."""

import glob
import os

import numpy as np
import pytest

from tests.scale.procs import run, run_two_processes, tensorboard_scalars

MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=4"]
SGD = ["--config.train.optimizer=sgd", "--config.train.learning_rate=0.05"]


@pytest.mark.slow  # ~2 min alone on 2 cores (gloo collectives between processes)
def test_two_processes_match_one_and_checkpoints_cross_restore(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single = run(one, *MESH, *SGD)
    outs = run_two_processes(two, *MESH, *SGD)
    assert "{" in outs[0] and "{" not in outs[1]  # only process 0 prints the summary
    assert len(glob.glob(os.path.join(two, "tensorboard", "events.*"))) == 1  # only process 0 writes events
    a, b = tensorboard_scalars(one), tensorboard_scalars(two)
    assert sorted(a) == sorted(b)
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)
    assert single["steps"] == 20

    # 2 processes -> 1 process (another mesh) -> 2 processes, resuming each time.
    relay = str(tmp_path / "relay")
    run_two_processes(relay, *MESH, *SGD, "--config.train.halt_after_steps=8")
    middle = run(relay, "--config.mesh.data=-1", "--config.mesh.fsdp=1", *SGD, "--config.train.halt_after_steps=6")
    assert middle["start_step"] == 8 and middle["steps"] == 14
    run_two_processes(relay, *MESH, *SGD)
    c = tensorboard_scalars(relay)
    np.testing.assert_allclose([c[s] for s in sorted(a)], [a[s] for s in sorted(a)], rtol=1e-4)

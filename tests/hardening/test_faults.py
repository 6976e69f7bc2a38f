"""Fault injection on real effjax processes: a full disk, SIGKILL inside a checkpoint save, one of two
processes dying. Each ends with one line (or resumes) and loses at most the steps since the last
committed checkpoint; resumed runs are bit-identical to straight ones."""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from effjax.train.checkpoint import Checkpointer
from effjax.train.trainer import train_and_evaluate
from tests.foundation.helpers import tiny
from tests.scale.procs import REPO, checkpoint_steps, command, env_with_devices, free_port, run, wait_for

STEPS = ["--config.train.num_steps=40", "--config.checkpoint.every_steps=2", "--config.log.every_steps=2",
         "--config.eval.every_steps=1000"]


def _straight(tmp_path, devices=8):
    c = tiny()
    c.train.num_steps, c.checkpoint.every_steps, c.log.every_steps, c.eval.every_steps = 40, 2, 2, 1000
    return jax.device_get(train_and_evaluate(c, str(tmp_path / "straight"), devices=jax.devices()[:devices]).state.params)


def _params(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3, async_save=False)
    step, params = ckpt.latest_params()  # verifies the step's checksums
    ckpt.close()
    return step, params


@contextlib.contextmanager
def _small_disk(path, size):
    """A tmpfs of `size` at `path` (root in a container that allows mounts), else None."""
    os.makedirs(path)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_the_committed_steps_resume(tmp_path):
    disk = str(tmp_path / "disk")
    with _small_disk(disk, "6m") as mounted:
        if not mounted:
            pytest.skip("no tmpfs mount here; test_full_disk_injected covers the same path with an injected OSError")
        workdir = os.path.join(disk, "run")
        proc = subprocess.run(command(workdir, *STEPS, "--config.checkpoint.keep=100"), cwd=REPO, env=env_with_devices(8), capture_output=True,
                              text=True, timeout=600)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("effjax:")]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert len(lines) == 1 and lines[0].startswith(f"effjax: error: I/O failure ({workdir}/checkpoints): checkpoint "
                                                       "step "), proc.stderr[-3000:]
        assert lines[0].endswith("could not be written: No space left on device; committed checkpoints are kept; free "
                                 "space or fix the workdir and run the same command to resume"), lines
        committed = checkpoint_steps(workdir)
        assert committed and committed[-1] < 40
        moved = str(tmp_path / "moved")
        shutil.copytree(workdir, moved)
    summary = run(moved, *STEPS)
    assert summary["start_step"] == committed[-1] and summary["steps"] == 40
    step, resumed = _params(moved)
    assert step == 40
    jax.tree.map(np.testing.assert_array_equal, _straight(tmp_path), resumed)


@pytest.mark.slow
def test_full_disk_injected(tmp_path, monkeypatch):
    """The same failure where tmpfs cannot be mounted: ENOSPC raised inside the third save."""
    from effjax.train import checkpoint_manifest
    from tests.hardening.cli import run_cli

    from effjax.job.run import run_main_job

    real_write, calls = checkpoint_manifest.write, []

    def write(step_dir):
        calls.append(step_dir)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", step_dir)
        real_write(step_dir)

    monkeypatch.setattr(checkpoint_manifest, "write", write)
    workdir = str(tmp_path / "run")
    code, err, _ = run_cli(["--config=configs/quickstart.py:tiny", f"--workdir={workdir}", "--config.log.progress_bar=False",
                            *STEPS], run_main_job=run_main_job)
    lines = [line for line in err.splitlines() if line.startswith("effjax:")]
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert lines == [f"effjax: error: I/O failure ({workdir}/checkpoints): checkpoint step 6 could not be written: No "
                     "space left on device; committed checkpoints are kept; free space or fix the workdir and run the "
                     "same command to resume"], err[-3000:]
    assert checkpoint_steps(workdir) == [2, 4]


@pytest.mark.slow
def test_sigkill_inside_a_save_then_resume_is_bit_identical(tmp_path):
    """Killed while a step's temporary directory exists (Orbax writing it), three times at random."""
    workdir = str(tmp_path / "killed")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    rng = random.Random(7)

    def saving():
        return os.path.isdir(ckpt_dir) and any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckpt_dir))

    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(command(workdir, *STEPS, "--config.checkpoint.async_save=True"), cwd=REPO,
                                env=env_with_devices(8), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        skip = rng.randint(0, 3)  # let a few saves commit first
        seen = 0
        while proc.poll() is None and seen <= skip:
            if wait_for(lambda: saving() or proc.poll() is not None, 300, poll=0.002) and saving():
                seen += 1
                if seen <= skip:
                    wait_for(lambda: not saving() or proc.poll() is not None, 60, poll=0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    summary = run(workdir, *STEPS)
    assert summary["steps"] == 40 and not any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckpt_dir))
    step, resumed = _params(workdir)
    assert step == 40
    jax.tree.map(np.testing.assert_array_equal, _straight(tmp_path), resumed)


@pytest.mark.slow
def test_one_of_two_processes_dies_and_the_other_exits_with_one_line(tmp_path):
    workdir = str(tmp_path)
    port = free_port()
    args = ["--config.train.num_steps=100000", "--config.checkpoint.every_steps=5", "--config.eval.every_steps=100000",
            "--config.mesh.data=-1", "--config.mesh.fsdp=1", f"--coordinator_address=localhost:{port}",
            "--num_processes=2", "--initialization_timeout=30", "--peer_timeout=20"]
    procs = [subprocess.Popen(command(workdir, *args, f"--process_id={i}"), cwd=REPO, env=env_with_devices(4),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        assert wait_for(lambda: checkpoint_steps(workdir), 300)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        out, err = procs[0].communicate(timeout=240)
        waited = time.time() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    lines = [line for line in err.splitlines() if line.startswith("effjax:")]
    assert procs[0].returncode == 1 and "Traceback" not in err, err[-3000:]
    assert lines == [f"effjax: error: process 1 of 2 stopped responding (no heartbeat in {workdir}/.heartbeats for 20 s); "
                     "process 0 exits; committed checkpoints are kept; restart every process to resume"], err[-3000:]
    assert waited < 20 + 15  # the configured timeout, plus polling and interpreter exit
    assert checkpoint_steps(workdir)  # what was committed is still there


def _evaluations(workdir):
    path = os.path.join(workdir, "search", "evaluations.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip()]


@pytest.mark.slow
def test_sigkill_during_the_search_loses_no_finished_evaluation(tmp_path):
    """Killed at a random evaluation of the search; the rerun keeps every evaluation written before the
    kill, finishes the budget, and flags every configuration no other one dominates (ties included)."""
    import json

    workdir = str(tmp_path)
    config = "configs/pipeline.py:digits,tiny"
    target = random.Random(11).randint(1, 4)
    proc = subprocess.Popen(command(workdir, config=config), cwd=REPO, env=env_with_devices(1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: len(_evaluations(workdir)) >= target or proc.poll() is not None, 600, poll=0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _evaluations(workdir)
    assert before
    summary = run(workdir, config=config, devices=1, timeout=600)
    after = _evaluations(workdir)
    assert after[:len(before)] == before and len(after) == 6
    assert len({json.loads(line)["id"] for line in after}) == 6
    with open(os.path.join(workdir, "pareto.json")) as f:
        points = json.load(f)["points"]
    vectors = [(p["metrics"]["score"], -p["cost"]["flops"], -p["cost"]["bits"]) for p in points]
    for p, v in zip(points, vectors):
        dominated = any(all(w >= x for w, x in zip(u, v)) and u != v for u in vectors)
        assert p["pareto"] == (not dominated), p["id"]
    assert summary["front_size"] == sum(p["pareto"] for p in points)

"""Launching effjax as real processes for the scale-out and fault tests."""

import json
import os
import socket
import subprocess
import sys
import time

from tests.xla_env import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env_with_devices(n: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join((f"--xla_force_host_platform_device_count={n}", *FAST_COMPILE))  # as in this process
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO
    return env


def command(workdir, *overrides, config="configs/quickstart.py:tiny"):
    return [sys.executable, "-m", "effjax.main", f"--config={os.path.join(REPO, config)}", f"--workdir={workdir}",
            "--config.log.progress_bar=False", *overrides]


def run(workdir, *overrides, devices=8, timeout=240, extra_args=(), config="configs/quickstart.py:tiny"):
    proc = subprocess.run(command(workdir, *overrides, *extra_args, config=config), cwd=REPO, env=env_with_devices(devices),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, *overrides, timeout=300):
    port = free_port()
    procs = [subprocess.Popen(
        command(workdir, *overrides, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                f"--process_id={i}", "--initialization_timeout=30"),
        cwd=REPO, env=env_with_devices(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def checkpoint_steps(workdir) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(x) for x in os.listdir(d) if x.isdigit() and os.path.exists(os.path.join(d, x, "_CHECKPOINT_METADATA")))


def wait_for(predicate, timeout: float, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def tensorboard_scalars(workdir, tag="train/loss") -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(workdir, "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}

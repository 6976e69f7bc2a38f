"""SIGINT behaves like SIGTERM: the first stops cleanly (training saves; the search keeps every finished
evaluation), a second exits at once, even inside a long C call."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from effjax.train import preemption
from tests.foundation.helpers import REPO
from tests.scale.procs import checkpoint_steps, command, env_with_devices, run, wait_for


def test_first_signal_outside_a_loop_raises_interrupted():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(preemption.Interrupted) as raised:
        with preemption.guard():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert raised.value.name == "SIGINT" and preemption.exit_status(raised.value.signum) == 130
    assert signal.getsignal(signal.SIGINT) is before


def test_first_signal_in_a_deferred_block_only_sets_the_flag():
    with preemption.guard() as g:
        with preemption.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert wait_for(lambda: g.requested, 5)
            time.sleep(0.1)  # the Python-level handler runs here and must not raise
        assert g.received == signal.SIGTERM and g.count == 1


SECOND = textwrap.dedent("""
    import sys, time
    from effjax.train import preemption
    with preemption.deferred("exiting at once; test"):
        print("ready", flush=True)
        time.sleep(60)
    print("not reached", flush=True)
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_exits_at_once(signum):
    proc = subprocess.Popen([sys.executable, "-c", SECOND], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    time.sleep(0.3)
    assert proc.poll() is None  # the first one only asked for a stop
    start = time.time()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=10)
    assert time.time() - start < 5
    assert proc.returncode == 128 + signum and "not reached" not in out
    name = signal.Signals(signum).name
    assert err.strip() == f"effjax: second {name}: exiting at once; test"


@pytest.mark.slow
def test_sigint_during_training_saves_and_exits_zero(tmp_path):
    workdir = str(tmp_path)
    args = ["--config.train.num_steps=100000", "--config.checkpoint.every_steps=50", "--config.eval.every_steps=100000"]
    proc = subprocess.Popen(command(workdir, *args), cwd=REPO, env=env_with_devices(8),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: checkpoint_steps(workdir), 240)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "SIGINT received: saved step" in err
    assert json.loads(out[out.index("{"):])["interrupted"] is True
    saved = checkpoint_steps(workdir)[-1]
    summary = run(workdir, *args, "--config.train.halt_after_steps=5")
    assert summary["start_step"] == saved and summary["steps"] == saved + 5


def _evaluations(workdir):
    path = os.path.join(workdir, "search", "evaluations.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_sigint_during_the_search_keeps_every_finished_evaluation(tmp_path):
    workdir = str(tmp_path)
    proc = subprocess.Popen(command(workdir, config="configs/pipeline.py:digits,tiny"), cwd=REPO,
                            env=env_with_devices(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: len(_evaluations(workdir)) >= 2, 400)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("effjax:")]
    kept = _evaluations(workdir)  # every line parses: nothing half-written
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert lines[-1].startswith("effjax: SIGINT received: stopped before the run finished; "
                                f"{len(kept)} finished search evaluations are kept in "), lines
    assert len(kept) >= 2

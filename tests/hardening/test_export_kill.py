"""SIGKILL at a random point of `python -m effjax.job.export`: the run's own files are untouched, and the
export rerun with --overwrite writes exactly the files a clean export writes."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import jax
import pytest

from effjax.job.run import run_main_job
from tests.foundation.helpers import REPO, tiny

WEIGHT_FILES = ("model.bin", "model.safetensors", "predict.jaxexport")


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tree_sha(root):
    return {os.path.relpath(os.path.join(d, n), root): _sha(os.path.join(d, n))
            for d, _, names in os.walk(root) for n in names}


def _export(workdir, output, *extra):
    return subprocess.Popen([sys.executable, "-m", "effjax.job.export", f"--workdir={workdir}", f"--output={output}",
                             *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_during_export_loses_nothing_and_the_rerun_equals_a_clean_export(tmp_path):
    workdir = str(tmp_path / "run")
    run_main_job(tiny(), workdir, devices=jax.devices()[:1])
    run_files = {"checkpoints": _tree_sha(os.path.join(workdir, "checkpoints")),
                 "config.json": _sha(os.path.join(workdir, "config.json"))}
    start = time.perf_counter()
    clean = _export(workdir, str(tmp_path / "clean"))
    assert clean.wait(timeout=900) == 0, clean.stderr.read()[-2000:]
    duration = time.perf_counter() - start
    killed_dir = str(tmp_path / "killed")
    for seed in range(2):
        proc = _export(workdir, killed_dir, "--overwrite")
        time.sleep(random.Random(seed).uniform(0.2, 0.9) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert {"checkpoints": _tree_sha(os.path.join(workdir, "checkpoints")),
                "config.json": _sha(os.path.join(workdir, "config.json"))} == run_files
    rerun = _export(workdir, killed_dir, "--overwrite")
    assert rerun.wait(timeout=900) == 0, rerun.stderr.read()[-2000:]
    for name in WEIGHT_FILES:
        assert _sha(os.path.join(killed_dir, name)) == _sha(os.path.join(tmp_path, "clean", name)), name

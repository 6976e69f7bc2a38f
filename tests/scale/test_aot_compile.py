"""Ahead-of-time compilation of the real train step for a TPU topology on this CPU machine."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.foundation.helpers import REPO

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu not installed (pip install 'effjax[tpu]')")


def _aot(*args):
    env = dict(os.environ, TPU_WORKER_HOSTNAMES="localhost")
    env.pop("JAX_PLATFORMS", None)
    return subprocess.run([sys.executable, "tools/aot_compile.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_small_topology_compiles_and_reports_memory_and_flops():
    proc = _aot("--config=configs/shapes_vit.py", "--topology=v5e:2x2", "--config.train.batch_size=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "4 x TPU v5" in out and "arguments" in out and "temporaries" in out
    assert "XLA FLOPs estimate per chip per step" in out and "verdict: fits" in out


def test_config_that_does_not_fit_is_reported_with_numbers():
    proc = _aot("--config=configs/shapes_vit.py", "--topology=v5e:2x2", "--config.train.batch_size=64", "--hbm_gib=0.001")
    assert proc.returncode == 1
    assert "verdict: DOES NOT FIT" in proc.stdout and "needed" in proc.stdout

import os
import subprocess
import sys

import jax
import pytest

from effjax.train.trainer import build
from effjax.config.validate import ConfigError

from tests.foundation.helpers import REPO, tiny


def _set(c, field, value):
    *parents, leaf = field.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = value


BAD = [
    ("model.name", "resnet", r"config.model.name='resnet': unknown model; allowed: \['mt_vit'"),
    ("data.name", "imagenet", r"config.data.name='imagenet': unknown dataset; allowed"),
    ("train.learning_rate", -0.1, r"config.train.learning_rate=-0.1: must be a finite number > 0"),
    ("train.batch_size", 30, r"config.train.batch_size=30: must be divisible by the data-parallel size 4"),
    ("mesh.data", 3, r"config.mesh .* needs 3 devices but 8 are available"),
    ("model.num_heads", 5, r"config.model.num_heads=5: must divide model.hidden_dim=32"),
    ("model.patch_size", 3, r"config.model.patch_size=3: must divide the image size 8x8"),
    ("train.num_steps", 0, r"config.train.num_steps=0: must be a positive integer"),
    ("train.optimizer", "adam", r"config.train.optimizer='adam': allowed: adamw, sgd"),
]


@pytest.mark.parametrize("field, value, message", BAD)
def test_bad_config_gives_one_clear_error(field, value, message):
    c = tiny()
    if field == "train.batch_size":
        c.mesh.tensor = 2  # 8 devices: data fills 4
    _set(c, field, value)
    with pytest.raises(ConfigError, match=message):
        build(c, jax.devices())


def test_missing_npz_path_is_a_config_error():
    c = tiny()
    c.data.name = "npz"
    c.data.path = "/nonexistent/data.npz"
    c.data.tasks = ("label:classification:10",)
    with pytest.raises(ConfigError, match=r"config.data.path='/nonexistent/data.npz': file not found"):
        build(c, jax.devices()[:1])


def test_cli_prints_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "effjax.main", f"--config={REPO}/configs/quickstart.py:tiny",
         f"--workdir={tmp_path}", "--config.train.learning_rate=-1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == "effjax: error: config.train.learning_rate=-1.0: must be a finite number > 0", proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))

"""Bad inputs a new user tries, and the one line effjax answers with (docs/bad_inputs.md).

Each case must fail before anything is compiled or written, with a message that
names the field; none may damage or delete an existing checkpoint.
"""

import hashlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from effjax.train.trainer import TrainingDiverged, build, train_and_evaluate
from effjax.config.validate import ConfigError
from tests.foundation.helpers import REPO, tiny


def _tree_digest(directory):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for f in sorted(files):
            path = os.path.join(root, f)
            h.update(path.encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("trained"))
    c = tiny()
    c.train.num_steps = 4
    train_and_evaluate(c, workdir, devices=jax.devices()[:1])
    return workdir


def _npz(tmp_path, name, payload):
    path = tmp_path / name
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        np.savez(path, **payload)
    return str(path)


IN_PROCESS = [
    ("unknown model", lambda c, t: c.model.update(name="resnet"), r"config.model.name='resnet': unknown model"),
    ("unknown dataset", lambda c, t: c.data.update(name="imagenet"), r"config.data.name='imagenet': unknown dataset"),
    ("negative learning rate", lambda c, t: c.train.update(learning_rate=-0.1), r"config.train.learning_rate=-0.1: must be a finite number > 0"),
    ("infinite learning rate", lambda c, t: c.train.update(learning_rate=float("inf")), r"config.train.learning_rate=inf"),
    ("zero steps", lambda c, t: c.train.update(num_steps=0), r"config.train.num_steps=0: must be a positive integer"),
    ("zero eval batch", lambda c, t: c.eval.update(batch_size=0), r"config.eval.batch_size=0: must be a positive integer"),
    ("mesh larger than the devices", lambda c, t: c.mesh.update(data=16), r"config.mesh .* needs 16 devices but 8 are available"),
    ("negative mesh axis", lambda c, t: c.mesh.update(tensor=-2), r"config.mesh.tensor=-2: must be a positive size or -1"),
    ("two fill axes", lambda c, t: c.mesh.update(fsdp=-1), r"config.mesh: at most one axis may be -1"),
    ("batch not divisible by data parallelism", lambda c, t: c.train.update(batch_size=36), r"config.train.batch_size=36: must be divisible by the data-parallel size 8"),
    ("heads not dividing width", lambda c, t: c.model.update(num_heads=5), r"config.model.num_heads=5: must divide model.hidden_dim=32"),
    ("patch not dividing image", lambda c, t: c.model.update(patch_size=3), r"config.model.patch_size=3: must divide the image size 8x8"),
    ("unknown optimizer", lambda c, t: c.train.update(optimizer="adam"), r"config.train.optimizer='adam': allowed: adamw, sgd"),
    ("unknown dtype", lambda c, t: c.model.update(dtype="float16"), r"config.model.dtype='float16': allowed"),
    ("loss weight for an unknown task", lambda c, t: c.loss.task_weights.update(colour=1.0), r"config.loss.task_weights.colour=1.0: unknown task"),
    ("missing data file", lambda c, t: c.data.update(name="npz", path="/no/such.npz", tasks=("y:classification:3",)),
     r"config.data.path='/no/such.npz': file not found"),
    ("corrupt npz", lambda c, t: c.data.update(name="npz", path=_npz(t, "bad.npz", b"PK\x03\x04 truncated"), tasks=("y:classification:3",)),
     r"not a readable .npz file"),
    ("npz without the task array", lambda c, t: c.data.update(name="npz", path=_npz(t, "x.npz", {"image": np.zeros((40, 8, 8))}), tasks=("y:classification:3",)),
     r"arrays \['y'\] missing; the file has \['image'\]"),
    ("bad npz task spec", lambda c, t: c.data.update(name="npz", path=_npz(t, "y.npz", {"image": np.zeros((40, 8, 8))}), tasks=("y:colour",)),
     r"expected 'name:kind\[:num_classes\]'"),
]


@pytest.mark.parametrize("case, mutate, message", IN_PROCESS, ids=[c[0] for c in IN_PROCESS])
def test_bad_config_stops_before_compiling(tmp_path, case, mutate, message):
    c = tiny()
    mutate(c, tmp_path)
    with pytest.raises(ConfigError, match=message):
        build(c, jax.devices())


def test_checkpoint_of_another_model_is_refused_and_kept(trained_workdir):
    before = _tree_digest(trained_workdir + "/checkpoints")
    c = tiny()
    c.model.hidden_dim, c.model.mlp_dim = 48, 96
    with pytest.raises(ConfigError, match=r"does not match this model: params/blocks_0/attention/key/bias is shape \(32,\) there but \(48,\) here"):
        train_and_evaluate(c, trained_workdir, devices=jax.devices()[:1])
    assert _tree_digest(trained_workdir + "/checkpoints") == before
    assert not os.path.exists(os.path.join(trained_workdir, "checkpoints_corrupt"))


def test_init_from_missing_workdir(tmp_path):
    c = tiny()
    c.train.init_from = str(tmp_path / "nothing")
    with pytest.raises(ConfigError, match=r"config.train.init_from=.*: no checkpoint"):
        train_and_evaluate(c, str(tmp_path / "run"), devices=jax.devices()[:1])


def test_learning_rate_that_produces_nan_keeps_checkpoints(trained_workdir, tmp_path):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained_workdir, workdir)
    before = _tree_digest(workdir + "/checkpoints")
    c = tiny()
    c.train.num_steps, c.train.learning_rate, c.train.warmup_steps = 30, 1e30, 0
    c.train.max_skipped_steps, c.checkpoint.every_steps = 3, 1000
    c.train.on_schedule_change = "new"  # this resume replaces the checkpoint's schedule on purpose
    with pytest.raises(TrainingDiverged, match=r"the last \d+ steps \(up to step \d+\) produced non-finite"):
        train_and_evaluate(c, workdir, devices=jax.devices()[:1])
    assert _tree_digest(workdir + "/checkpoints") == before


CLI = [
    (["--config.train.learning_rate=fast"], "could not convert string to float: 'fast"),
    (["--config.train.lerning_rate=1"], 'Did you mean "learning_rate"'),
    (["--config.train.batch_size=32.5"], "--config.train.batch_size=32.5"),
    (["--config=configs/quickstart.py:huge"], "unknown variant 'huge'; allowed: tiny"),
    (["--config=configs/nope.py"], "No such file or directory: 'configs/nope.py'"),
]


@pytest.mark.parametrize("args, message", CLI, ids=["wrong type", "misspelt field", "float batch size", "unknown variant", "missing config file"])
def test_cli_bad_flags_print_one_line(tmp_path, args, message):
    base = [] if any(a.startswith("--config=") for a in args) else ["--config=configs/quickstart.py:tiny"]
    proc = subprocess.run([sys.executable, "-m", "effjax.main", f"--workdir={tmp_path}", *base, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines[-1].startswith("effjax: error: ") and message in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr

"""`python -m effjax.job.export`: a plain training run exports its trained model; an existing export is kept
unless --overwrite; --output naming a file and --point with --max_flops are refused with one line."""

import json
import os
import subprocess
import sys

import jax
import pytest

from effjax.job import run as pipeline
from effjax.compress import artifacts
from effjax.config.load import load_config
from effjax.job.export import export_from_workdir
from tests.foundation.helpers import REPO, tiny


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("plain"))
    summary = pipeline.run_main_job(tiny("quickstart"), workdir, devices=jax.devices()[:1])
    return workdir, summary


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "effjax.job.export", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc, lines


def _assert_refused(proc, lines, message):
    assert proc.returncode == 2 and lines and lines[-1].startswith("effjax.job.export: error: "), proc.stderr[-2000:]
    assert message in lines[-1] and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_plain_training_run_exports_its_trained_model(plain_run):
    workdir, summary = plain_run
    out = export_from_workdir(workdir, platforms=("cpu",))
    assert out["directory"] == os.path.join(workdir, "export", "trained")
    for task, value in summary["metrics"]["test"].items():
        assert out["measured_test"][task] == value, task
    for name in ("model.bin", "model.json", artifacts.ARTIFACT, artifacts.SAFETENSORS):
        assert os.path.isfile(os.path.join(out["directory"], name)), name
    assert out["standalone"]["padded_params"] == [] and out["standalone"]["platforms"] == ["cpu"]
    with pytest.raises(ValueError, match="training run without a search"):
        export_from_workdir(workdir, point_id=0)


def _plain_workdir(tmp_path):
    """A workdir as far as the CLI reads it before loading anything: a run's config and a checkpoints dir."""
    workdir = tmp_path / "plain_run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(tiny("quickstart").to_json())
    return workdir


def test_an_existing_export_is_kept_without_overwrite(tmp_path):
    directory = tmp_path / "export"
    directory.mkdir()
    (directory / "model.bin").write_bytes(b"an earlier export")
    proc, lines = _cli(f"--workdir={_plain_workdir(tmp_path)}", f"--output={directory}")
    _assert_refused(proc, lines, "directory not empty (1 entries); pass --overwrite to replace an export there")
    assert (directory / "model.bin").read_bytes() == b"an earlier export"


@pytest.mark.slow
def test_overwrite_replaces_only_the_exports_own_files(plain_run):
    workdir, _ = plain_run
    directory = os.path.join(workdir, "export", "twice")
    export_from_workdir(workdir, output=directory, platforms=("cpu",))
    binary = os.path.join(directory, "model.bin")
    stamp = os.stat(binary).st_mtime_ns
    with open(os.path.join(directory, "notes.txt"), "w") as f:
        f.write("the user's own file")
    with pytest.raises(ValueError, match="directory not empty"):
        export_from_workdir(workdir, output=directory, platforms=("cpu",))
    assert os.stat(binary).st_mtime_ns == stamp
    export_from_workdir(workdir, output=directory, overwrite=True, platforms=("cpu",))
    assert os.stat(binary).st_mtime_ns != stamp
    assert os.path.isfile(os.path.join(directory, "notes.txt"))


def test_output_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    proc, lines = _cli(f"--workdir={_plain_workdir(tmp_path)}", f"--output={path}")
    _assert_refused(proc, lines, "is a file, not a directory")
    assert path.read_text() == "not a directory"


def test_point_with_max_flops_is_refused(tmp_path):
    workdir = tmp_path / "searched"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(load_config(os.path.join(REPO, "configs", "pipeline.py") + ":digits,tiny").to_json())
    points = [{"id": i, "config": {}, "pareto": True, "cost": {"flops": 1e5 * (i + 1)}, "metrics": {"score": 0.5}}
              for i in range(2)]
    (workdir / "pareto.json").write_text(json.dumps({"points": points}))
    proc, lines = _cli(f"--workdir={workdir}", "--point=1", "--max_flops=1e9")
    _assert_refused(proc, lines, "--point=1 and --max_flops=1e+09: give one of them, not both")

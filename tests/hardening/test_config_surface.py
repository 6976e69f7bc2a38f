"""Config overrides, config files and workdirs refused on the command line: one line, a stated exit, no traceback."""

import os
import stat

import pytest

from tests.hardening.cli import ReachedTraining, run_cli

TINY = "--config=configs/quickstart.py:tiny"
PIPELINE = "--config=configs/pipeline.py:digits,tiny"


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("effjax: error: "), err
    return lines[0]


CASES = [
    ("did you mean budget", [PIPELINE, "--config.search.num_evaluations=12"],
     "--config.search.num_evaluations=12: unknown field 'num_evaluations' in config.search. Did you mean \"budget\""),
    ("did you mean learning_rate", [TINY, "--config.train.lerning_rate=1"], 'Did you mean "learning_rate" (peak learning rate)?'),
    ("unknown field, no close name", [TINY, "--config.zzz=1"], "unknown field 'zzz' in the config. Fields: checkpoint, data,"),
    ("field under a number", [TINY, "--config.train.learning_rate.decay=1"],
     "config.train.learning_rate is a value of type float, not a section with fields"),
    ("width_menu=abc", [PIPELINE, "--config.model.width_menu=abc"],
     "config.model.width_menu=('abc',): must be a non-empty list of width fractions in (0, 1]"),
    ("width_menu above 1", [PIPELINE, "--config.model.width_menu=(0.5,2.0)"], "config.model.width_menu=(0.5, 2.0)"),
    ("task weight not a number", [TINY, "--config.loss.task_weights.digit=abc"],
     "--config.loss.task_weights.digit=abc: a task weight must be a number"),
    ("negative task weight", [TINY, "--config.loss.task_weights.digit=-1"], "a task weight must be a finite number >= 0"),
    ("helper module as config", ["--config=configs/qat_common.py"],
     "has no get_config(arg); it is a helper module, not an experiment config; experiment configs: "),
    ("wrong type keeps its quotes", [TINY, "--config.train.batch_size=abc"], "invalid literal for int() with base 10: 'abc'"),
    ("unknown on_schedule_change", [TINY, "--config.train.on_schedule_change=maybe"],
     "config.train.on_schedule_change='maybe': allowed: refuse, new"),
]


@pytest.mark.parametrize("case, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_override_or_config_file_gives_one_line(tmp_path, case, args, message):
    workdir = tmp_path / "run"
    code, err, _ = run_cli([*args, f"--workdir={workdir}"])
    line = _one_line(err)
    assert code == 2 and message in line, line
    assert not workdir.exists()  # refused before anything is written


def test_task_weight_is_settable_from_the_command_line(tmp_path):
    seen = {}

    def job(config, workdir, devices=None):
        seen["weights"] = config.loss.task_weights.to_dict()
        return {"ok": True}

    code, err, _ = run_cli([TINY, f"--workdir={tmp_path}", "--config.loss.task_weights.digit=2.0",
                            "--config.loss.task_weights.parity=0.5"], run_main_job=job)
    assert code == 0, err
    assert seen["weights"] == {"digit": 2.0, "parity": 0.5}


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("keep me")
    code, err, _ = run_cli([TINY, f"--workdir={path}"])
    assert code == 2 and _one_line(err) == f"effjax: error: --workdir={path}: is a file, not a directory"
    assert path.read_text() == "keep me"


def test_workdir_under_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("keep me")
    code, err, _ = run_cli([TINY, f"--workdir={path}/run"])
    assert code == 2
    assert _one_line(err) == f"effjax: error: --workdir={path}/run: {path} is a file, so no directory can be created under it"


def test_unwritable_workdir(tmp_path):
    # read-only for everyone; root ignores file modes, so /proc (writable by no one) stands in then
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    target = f"{locked}/run" if os.geteuid() != 0 else "/proc/effjax-run"
    try:
        code, err, _ = run_cli([TINY, f"--workdir={target}"])
    finally:
        locked.chmod(stat.S_IRWXU)
    line = _one_line(err)
    assert code == 2 and line.startswith(f"effjax: error: --workdir={target}: not a writable directory ("), line


def test_valid_command_reaches_the_job(tmp_path):
    with pytest.raises(ReachedTraining):
        code, err, _ = run_cli([TINY, f"--workdir={tmp_path}"])
        raise AssertionError(err)  # run_cli returns only when main handled the stub's exception

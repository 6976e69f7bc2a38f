"""One run per workdir: a second is refused naming the holder's pid; a dead holder's lock is taken over."""

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from effjax.train.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLocked
from tests.foundation.helpers import REPO
from tests.hardening.cli import run_cli

HOLD = textwrap.dedent("""
    import sys, time
    from effjax.train.workdir_lock import WorkdirLock
    lock = WorkdirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _holder(workdir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_is_refused_naming_the_pid(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(WorkdirLocked, match=rf"workdir {tmp_path} is in use by pid {holder.pid} on "):
            WorkdirLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_cli_second_run_exits_3_with_one_line(tmp_path):
    holder = _holder(tmp_path)
    try:
        code, err, _ = run_cli(["--config=configs/quickstart.py:tiny", f"--workdir={tmp_path}"])
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1, err
    assert lines[0].startswith(f"effjax: error: workdir {tmp_path} is in use by pid {holder.pid}"), err


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in (tmp_path / LOCK_FILE).read_text()  # the dead process left its pid behind
    with caplog.at_level(logging.WARNING, logger="effjax"):
        with WorkdirLock(str(tmp_path)):
            assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_FILE).read_text()
    assert f"taking over the lock left by pid {holder.pid}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="effjax"):
        with WorkdirLock(str(tmp_path)):  # released cleanly: no warning the next time
            pass
    assert "taking over" not in caplog.text

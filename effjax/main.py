"""effjax launcher: `python -m effjax.main --config=configs/<name>.py[:variant] --workdir=<dir>`.

Overrides: `--config.train.learning_rate=1e-3`. Several hosts: start the same
command on each with `--coordinator_address=host0:1234 --num_processes=N
--process_id=i` (on TPU pods and SLURM, JAX detects these by itself). Config
mistakes print one line naming the field and exit with status 2.

Exit status: 0 done, or stopped by the first SIGTERM / SIGINT during training after
saving a checkpoint (the summary says "interrupted": true); 1 training diverged or an
I/O failure; 2 a bad config, workdir or flag; 3 the workdir is in use by another run;
128 + signal number for a first signal outside training (start-up, search, export:
every finished search evaluation is on disk) or for a second signal, which exits at once.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

def _cluster_detected() -> bool:
    """A multi-host launcher's environment (read before JAX is imported: libtpu rewrites some of it)."""
    env = os.environ
    if int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return True
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts and not hosts.startswith("WARNING")


_CLUSTER_AT_START = _cluster_detected()

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/quickstart.py[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and results.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of JAX processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_INIT_TIMEOUT = flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for the other processes.")
_PEER_TIMEOUT = flags.DEFINE_integer("peer_timeout", 60, "Seconds without a heartbeat after which a multi-process run "
                                     "takes a peer for dead and exits with one line.")
_REUSE_HOST_MEMORY = flags.DEFINE_boolean(
    "reuse_host_memory", True, "On the CPU backend, keep freed host memory in the process (glibc malloc) so each XLA "
    "execution reuses the last one's temporaries instead of faulting in fresh pages (effjax/train/host_memory.py).")


def _initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value or _NUM_PROCESSES.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value, initialization_timeout=_INIT_TIMEOUT.value)
    elif _CLUSTER_AT_START:
        jax.distributed.initialize()


_OPEN_MAP_ENTRIES: dict[str, float] = {}  # task weights given on the command line (config_overrides)


def _drop_orbax_tracebacks(record: logging.LogRecord) -> bool:
    """Orbax logs a failed background save with its traceback; the same failure reaches us as
    CheckpointSaveError and is reported in one line, so its log record is dropped."""
    return not (record.exc_info and "orbax" in record.pathname)


def _error(message: str) -> None:
    print(f"effjax: error: {message}", file=sys.stderr)


def main(argv) -> int:
    del argv
    from effjax.train import preemption

    with preemption.guard():
        try:
            return _main()
        except preemption.Interrupted as e:
            workdir = os.path.abspath(_WORKDIR.value or ".")
            evaluations = os.path.join(workdir, "search", "evaluations.jsonl")
            kept = ""
            if os.path.exists(evaluations):
                with open(evaluations, "rb") as f:
                    kept = f"; {sum(1 for line in f if line.strip())} finished search evaluations are kept in {evaluations}"
            print(f"effjax: {e.name} received: stopped before the run finished{kept}; every committed checkpoint in "
                  f"{workdir} is kept; run the same command to resume", file=sys.stderr)
            return preemption.exit_status(e.signum)


def _main() -> int:
    from effjax.config import overrides as config_overrides
    from effjax.job import json_safe
    from effjax.job.run import run_main_job
    from effjax.search.storage import CorruptEvaluations, SearchMismatch
    from effjax.train.checkpoint import CheckpointCorrupt
    from effjax.train.peer_watchdog import PeerWatchdog
    from effjax.train.trainer import TrainingDiverged
    from effjax.train.workdir_lock import WorkdirLock, WorkdirLocked
    from effjax.config.validate import ConfigError, check_workdir, validate_static

    if _CONFIG.value is None or not _WORKDIR.value:
        _error("--config and --workdir are required, e.g. --config=configs/quickstart.py --workdir=/tmp/effjax")
        return 2
    try:
        config = _CONFIG.value
        _ = config.seed  # ml_collections reports a config file that failed to load only on first use
    except OSError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        _error(f"--config: {lines[-1]}")
        return 2
    config_overrides.apply_open_entries(config, _OPEN_MAP_ENTRIES)
    logging.getLogger("effjax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO
    logging.getLogger("absl").addFilter(_drop_orbax_tracebacks)
    logging.getLogger("jax").setLevel(logging.WARNING)
    try:
        validate_static(config)  # before anything is written, so a bad config never touches the workdir
        check_workdir(_WORKDIR.value)
    except ConfigError as e:
        _error(str(e))
        return 2
    _initialize_distributed()
    import jax

    if _REUSE_HOST_MEMORY.value and jax.default_backend() == "cpu":
        from effjax.train import host_memory

        host_memory.keep_freed_memory()
    lock = WorkdirLock(_WORKDIR.value)
    watchdog = None
    try:
        if jax.process_index() == 0:
            lock.acquire()
        if jax.process_count() > 1:
            watchdog = PeerWatchdog(_WORKDIR.value, jax.process_index(), jax.process_count(), _PEER_TIMEOUT.value).start()
        summary = run_main_job(config, _WORKDIR.value)
    except WorkdirLocked as e:
        _error(str(e))
        return 3
    except (ConfigError, CorruptEvaluations, SearchMismatch) as e:
        _error(str(e))
        return 2
    except (TrainingDiverged, CheckpointCorrupt) as e:
        _error(str(e))
        return 1
    except OSError as e:  # a full disk, a workdir removed under the run, ...
        where = f" ({e.filename})" if e.filename else ""
        _error(f"I/O failure{where}: {e.strerror or e}; committed checkpoints are kept; free space or fix the "
               f"workdir and run the same command to resume")
        return 1
    finally:
        if watchdog is not None:
            watchdog.stop()
        lock.release()
    if jax.process_index() == 0:
        print(json.dumps(json_safe.finite(summary, "summary"), indent=2, allow_nan=False))
    return 0


def _config_spec(argv) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _experiment_configs(folder: str) -> list[str]:
    paths = sorted(glob.glob(os.path.join(folder or ".", "*.py")))
    return [os.path.join(folder, os.path.basename(p)) for p in paths
            if "def get_config(" in pathlib.Path(p).read_text()]


def _check_overrides(argv):
    """Unknown override fields (with suggestions) and open-map entries, before absl sees them."""
    from effjax.config import overrides as config_overrides
    from effjax.config.load import load_config

    spec = _config_spec(argv)
    if spec is None:
        return argv
    path = spec.partition(":")[0]
    try:
        config = load_config(spec)
    except AttributeError as e:
        if "get_config" not in str(e):
            return argv
        others = _experiment_configs(os.path.dirname(path))
        _error(f"--config={spec}: {path} has no get_config(arg); it is a helper module, not an experiment "
               f"config; experiment configs: {', '.join(others) or 'none found'}")
        sys.exit(2)
    except Exception:  # absl loads it again below and reports the failure in its own words
        return argv
    try:
        argv, entries = config_overrides.check(list(argv), config, path)
    except config_overrides.OverrideError as e:
        _error(str(e))
        sys.exit(2)
    _OPEN_MAP_ENTRIES.update(entries)
    sys.argv[:] = argv  # ml_collections reads the overrides from sys.argv, not from the argv it is given
    return argv


def _parse_flags(argv):
    """absl's parser, with bad flags and config overrides reported as one line (exit 2)."""
    argv = _check_overrides(argv)
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        text = str(e)
        if len(text) > 1 and text[0] in "'\"" and text[-1] == text[0]:  # KeyError quotes its message
            text = text[1:-1]
        lines = [line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()]
        message = lines[-1] if lines else type(e).__name__
        if "Traceback" in str(e):  # an exception inside a config file's get_config
            message = f"{lines[0].split(':')[0]}: {message}"
        if "Did you mean" in message:
            message = f"unknown config field {' '.join(lines)}"
        _error(message)
        sys.exit(2)


def run():
    """Console-script entry point (`effjax --config=... --workdir=...`)."""
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
    run()

"""effjax launcher: `python -m effjax.main --config=configs/<name>.py[:variant] --workdir=<dir>`.

Overrides: `--config.train.learning_rate=1e-3`. Several hosts: start the same
command on each with `--coordinator_address=host0:1234 --num_processes=N
--process_id=i` (on TPU pods and SLURM, JAX detects these by itself). Config
mistakes print one line naming the field and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import os
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


def _initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value or _NUM_PROCESSES.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value, initialization_timeout=_INIT_TIMEOUT.value)
    elif _CLUSTER_AT_START:
        jax.distributed.initialize()


def main(argv) -> int:
    del argv
    from effjax.job.run import run_main_job
    from effjax.train.trainer import TrainingDiverged
    from effjax.config.validate import ConfigError

    if _CONFIG.value is None or not _WORKDIR.value:
        print("effjax: error: --config and --workdir are required, e.g. "
              "--config=configs/quickstart.py --workdir=/tmp/effjax", file=sys.stderr)
        return 2
    try:
        config = _CONFIG.value
        _ = config.seed  # ml_collections reports a config file that failed to load only on first use
    except OSError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        print(f"effjax: error: --config: {lines[-1]}", file=sys.stderr)
        return 2
    logging.getLogger("effjax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO
    logging.getLogger("jax").setLevel(logging.WARNING)
    _initialize_distributed()
    try:
        summary = run_main_job(config, _WORKDIR.value)
    except ConfigError as e:
        print(f"effjax: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"effjax: error: {e}", file=sys.stderr)
        return 1
    import jax

    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _parse_flags(argv):
    """absl's parser, with bad flags and config overrides reported as one line (exit 2)."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        lines = [line.strip() for line in str(e).replace("\\n", "\n").strip("'\"").splitlines() if line.strip()]
        message = lines[-1] if lines else type(e).__name__
        if "Traceback" in str(e):  # an exception inside a config file's get_config
            message = f"{lines[0].split(':')[0]}: {message}"
        if "Did you mean" in message:
            message = f"unknown config field {' '.join(lines)}"
        print(f"effjax: error: {message}", file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point (`effjax --config=... --workdir=...`)."""
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
    run()

"""`python -m effjax.main` run in this process (flag parsing, validation, workdir checks), for fast CLI tests.

absl flags are process-global: each call sets sys.argv (ml_collections reads the
overrides from it), parses, runs `main` with `run_main_job` replaced by a stub, and
then removes the override flags ml_collections registered, so calls are independent.
"""

import contextlib
import io
import sys
from unittest import mock

from absl import flags

from effjax import main as effjax_main
from tests.foundation.helpers import REPO


class ReachedTraining(Exception):
    pass


def _reset() -> None:
    flags.FLAGS.unparse_flags()
    for name in list(flags.FLAGS):
        if name.startswith("config."):
            delattr(flags.FLAGS, name)
    effjax_main._OPEN_MAP_ENTRIES.clear()


def run_cli(args, run_main_job=None):
    """(exit status, stderr text, config or None) of `python -m effjax.main *args`.

    `run_main_job`: what the job does once everything is validated; by default it
    raises ReachedTraining, so a case that should have been refused cannot train.
    """
    def refuse(config, workdir, devices=None):
        raise ReachedTraining(f"reached run_main_job with workdir {workdir}")

    argv = ["effjax", *(a.replace("configs/", f"{REPO}/configs/", 1) if a.startswith("--config=") else a for a in args)]
    saved_argv = list(sys.argv)
    err = io.StringIO()
    config = None
    try:
        sys.argv[:] = argv
        with contextlib.redirect_stderr(err), mock.patch("effjax.job.run.run_main_job", run_main_job or refuse):
            try:
                effjax_main._parse_flags(argv)
                config = effjax_main._CONFIG.value
                code = effjax_main.main([])
            except SystemExit as e:
                code = e.code
    finally:
        sys.argv[:] = saved_argv
        _reset()
    return code, err.getvalue(), config

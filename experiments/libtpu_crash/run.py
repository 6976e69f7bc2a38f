"""Compiles the reproducer under each setting of the README's table and appends one JSON line per run to results.jsonl.

Settings: the barrier-free artifact with libtpu's defaults and with larger thread stacks, and the same step exported
with the barrier (the control). The crash does not happen on every compile, so each setting runs `--repeats` times,
the settings interleaved. Each compile runs in its own process, one at a time (libtpu holds a lock file).
Needs libtpu importable; from the repository root:

    python -m experiments.libtpu_crash.run --repeats=3
    python -m experiments.libtpu_crash.report
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACT = os.path.join(HERE, "sandwich_step_no_barrier.jax_export.gz")
RESULTS = os.path.join(HERE, "results.jsonl")
# (label, artifact: "no_barrier" or "barrier", LIBTPU_INIT_ARGS)
CASES = [
    ("without the barrier", "no_barrier", ""),
    ("with the barrier (control)", "barrier", ""),
    ("without the barrier", "no_barrier", "--fibers_default_thread_stack_size=131072"),
    ("without the barrier", "no_barrier", "--fibers_default_thread_stack_size=4194304"),
    ("without the barrier", "no_barrier", "--xla_internal_thread_stack_size_bytes=33554432"),
]


def _env(libtpu_args: str) -> dict:
    env = dict(os.environ, TPU_WORKER_HOSTNAMES="localhost")
    env.pop("JAX_PLATFORMS", None)
    env.pop("LIBTPU_INIT_ARGS", None)
    if libtpu_args:
        env["LIBTPU_INIT_ARGS"] = libtpu_args
    return env


def compile_once(artifact: str, libtpu_args: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "experiments.libtpu_crash.compile_export", f"--artifact={artifact}"],
                          env=_env(libtpu_args), capture_output=True, text=True, timeout=900)
    found = re.search(r"compiled: temporaries ([0-9.]+) MiB", proc.stdout)
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "compiled": found is not None, "temporaries_mib": float(found.group(1)) if found else None,
            "stack_overflow_reported": "STACK OVERFLOW" in proc.stderr}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--repeats", type=int, default=1, help="compiles per setting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        barrier_artifact = os.path.join(tmp, "step_barrier.jax_export.gz")
        subprocess.run([sys.executable, "-m", "experiments.libtpu_crash.export_step", f"--out={barrier_artifact}"],
                       env=_env(""), check=True, capture_output=True)
        import jax
        libtpu_version = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('libtpu'))"],
                                        capture_output=True, text=True).stdout.strip()
        for label, which, libtpu_args in [case for _ in range(args.repeats) for case in CASES]:
            row = {"label": label, "artifact": which, "libtpu_init_args": libtpu_args,
                   **compile_once(ARTIFACT if which == "no_barrier" else barrier_artifact, libtpu_args),
                   "jax": jax.__version__, "libtpu": libtpu_version,
                   "date": datetime.date.today().isoformat()}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

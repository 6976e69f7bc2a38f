"""Installs effjax on a second Python / JAX stack in its own venv and runs a smoke subset there.

  python -m tools.jax_stack --python=python3.12                # newest jax that pip resolves
  python -m tools.jax_stack --python=python3.13 --venv=/tmp/s  # another interpreter, another venv
  python -m tools.jax_stack --python=python3.11 --pin="jax==0.10.2"
  python -m tools.jax_stack --table      # experiments/jax_stack/results.jsonl as a markdown table

The venv (default `~/.cache/effjax/stack-py<X.Y>`) is created when missing and effjax is
installed into it with its test extras (`pip install -e '.[test]'` plus any `--pin`), so pip
resolves the newest versions the bounds of `pyproject.toml` allow. Then the smoke subset
(`SMOKE` below: model and cost, data, training with checkpoints and TensorBoard, AQT, search,
export with its jax.export artifact) runs there, and a tiny main job. It prints one JSON
line: interpreter, resolved versions, seconds per step, and whether each step passed; it
exits 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = (
    "tests/foundation/test_model_and_cost.py",
    "tests/foundation/test_data.py",
    "tests/data/test_bad_user_data.py",
    "tests/search/test_hypervolume.py",
    "tests/quant_aqt/test_aqt_config.py",
    "tests/export/test_standalone.py",
    "tests/export/test_bad_exports.py",
)
RESULTS = os.path.join(REPO, "experiments", "jax_stack", "results.jsonl")
PACKAGES = ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "aqtp", "chex", "grain", "numpy")


def _run(cmd, **kwargs) -> tuple[bool, float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    return proc.returncode == 0, time.perf_counter() - start, (proc.stdout + proc.stderr)[-3000:]


def table(path: str = RESULTS) -> str:
    """The recorded runs, one row each."""
    rows = ["| Python | jax | flax | orbax | aqtp | install s | smoke tests | smoke s | tiny main job s | passed |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            v, s = r["versions"], r["seconds"]
            rows.append(f"| {v['python']} | {v['jax']} | {v['flax']} | {v['orbax-checkpoint']} | {v['aqtp']} | "
                        f"{s.get('install', '-')} | {r.get('smoke_tests_tail', '-')} | {s.get('smoke_tests', '-')} | "
                        f"{s.get('main_job_tiny', '-')} | {all(r['passed'].values())} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="interpreter of the stack, e.g. python3.12")
    parser.add_argument("--record", action="store_true", help=f"append the JSON line to {os.path.relpath(RESULTS, REPO)}")
    parser.add_argument("--table", action="store_true", help="print the recorded runs as a markdown table")
    parser.add_argument("--venv", help="venv directory (created when missing)")
    parser.add_argument("--pin", action="append", default=[], help="extra requirement, e.g. jax==0.10.2 (repeatable)")
    parser.add_argument("--skip_tests", action="store_true", help="install and report versions only")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    if not args.python:
        parser.error("--python is required")
    python = shutil.which(args.python) or args.python
    ok, _, out = _run([python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"])
    if not ok:
        print(f"jax_stack: error: --python={args.python}: cannot run it ({out.strip()[-200:]})", file=sys.stderr)
        return 2
    version = out.strip()
    venv = args.venv or os.path.join(os.path.expanduser("~"), ".cache", "effjax", f"stack-py{version}")
    vpy = os.path.join(venv, "bin", "python")
    report = {"python": version, "venv": venv, "seconds": {}, "passed": {}}
    if not os.path.exists(vpy):
        ok, seconds, out = _run([python, "-m", "venv", venv])
        if not ok:
            print(f"jax_stack: error: venv {venv}: {out.strip()[-300:]}", file=sys.stderr)
            return 2
    ok, seconds, out = _run([vpy, "-m", "pip", "install", "-q", "-e", f"{REPO}[test]", *args.pin])
    report["seconds"]["install"], report["passed"]["install"] = round(seconds, 1), ok
    if not ok:
        report["install_log"] = out
        print(json.dumps(report))
        return 1
    ok, _, out = _run([vpy, "-c", "import importlib.metadata as m, json, platform; print(json.dumps({p: "
                       "(platform.python_version() if p == 'python' else m.version(p)) for p in "
                       f"{list(PACKAGES)!r}}}))"])
    report["versions"] = json.loads(out.strip().splitlines()[-1]) if ok else out
    if not args.skip_tests:
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        ok, seconds, out = _run([vpy, "-m", "pytest", "-q", "-x", *SMOKE], cwd=REPO, env=env)
        report["seconds"]["smoke_tests"], report["passed"]["smoke_tests"] = round(seconds, 1), ok
        report["smoke_tests_tail"] = out.strip().splitlines()[-1] if out.strip() else ""
        if not ok:
            report["smoke_tests_log"] = out
        with tempfile.TemporaryDirectory() as workdir:
            ok, seconds, out = _run([vpy, "-m", "effjax.main", "--config=configs/quickstart.py:tiny",
                                     f"--workdir={workdir}", "--config.log.progress_bar=False"], cwd=REPO, env=env)
        report["seconds"]["main_job_tiny"], report["passed"]["main_job_tiny"] = round(seconds, 1), ok
        if not ok:
            report["main_job_log"] = out
    print(json.dumps(report))
    if args.record:
        with open(RESULTS, "a") as f:
            f.write(json.dumps({k: v for k, v in report.items() if not k.endswith("_log")}) + "\n")
    return 0 if all(report["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

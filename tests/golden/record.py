"""Writes the golden outputs: `python -m tests.golden.record [case ...]` (default: every case); `--to=<file> <case>`
writes one case's outputs there instead (how test_golden.py recomputes a case under the production flags)."""

import json
import os
import sys

from tests.xla_env import SIMULATED_DEVICES, production_flags  # noqa: E402

# the test session's devices (8 simulated), with the production compiler flags, set before JAX is imported, so a case
# records in the environment it is compared in (int4 QAT amplifies the reduction-order differences between them)
os.environ["XLA_FLAGS"] = production_flags(os.environ.get("XLA_FLAGS", "") + " " + SIMULATED_DEVICES)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from tests.golden.cases import CASES, compute, golden_path  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].startswith("--to="):
        with open(sys.argv[1].removeprefix("--to="), "w") as f:
            json.dump(compute(sys.argv[2]), f)
        sys.exit(0)
    names = sys.argv[1:] or CASES
    os.makedirs(os.path.dirname(golden_path(CASES[0])), exist_ok=True)
    for name in names:
        data = compute(name)
        with open(golden_path(name), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        print("wrote", golden_path(name))

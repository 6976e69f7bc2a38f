"""Writes the golden outputs: `python -m tests.golden.record [case ...]` (default: every case)."""

import json
import os
import sys

# the test session's XLA set-up (tests/conftest.py: 8 simulated host devices), set before JAX is imported, so a
# case records in the environment it is compared in (int4 QAT amplifies the reduction-order differences between them)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from tests.golden.cases import CASES, compute, golden_path  # noqa: E402

if __name__ == "__main__":
    names = sys.argv[1:] or CASES
    os.makedirs(os.path.dirname(golden_path(CASES[0])), exist_ok=True)
    for name in names:
        data = compute(name)
        with open(golden_path(name), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        print("wrote", golden_path(name))

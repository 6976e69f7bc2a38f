"""Writes the golden outputs: `python -m tests.golden.record [case ...]` (default: every case)."""

import json
import os
import sys

from tests.golden.cases import CASES, compute, golden_path

if __name__ == "__main__":
    names = sys.argv[1:] or CASES
    os.makedirs(os.path.dirname(golden_path(CASES[0])), exist_ok=True)
    for name in names:
        data = compute(name)
        with open(golden_path(name), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        print("wrote", golden_path(name))

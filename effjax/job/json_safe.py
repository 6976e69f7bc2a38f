"""Valid JSON only: non-finite floats become null, each with one warning naming its key path.

Python's `json` writes NaN and Infinity, which RFC 8259 parsers (jq, JavaScript,
most other languages) reject. Results files pass through `finite` and are then
dumped with `allow_nan=False`, so an invalid file can never be written silently.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import numpy as np

log = logging.getLogger("effjax")


def finite(value: Any, where: str) -> Any:
    """`value` with numpy scalars as Python numbers and NaN / inf replaced by None (warned once per key path)."""
    if isinstance(value, dict):
        return {k: finite(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        log.warning("%s is %s, not a number JSON can hold; written as null", where, value)
        return None
    return value


def dump(value: Any, path: str, indent: int | None = 2) -> None:
    """Writes `finite(value)` as JSON to `path` atomically (a temporary file renamed over it)."""
    text = json.dumps(finite(value, os.path.basename(path)), indent=indent, allow_nan=False)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

"""One formatting of "mean ± sample std over seeds" for every experiment's tables (no ± with one seed)."""

from __future__ import annotations

import numpy as np


def mean_std(values, digits: int = 1, signed: bool = False) -> str:
    """'m ± s' with the sample standard deviation (ddof 1); just 'm' for a single value."""
    v = np.asarray(values, float)
    if v.size == 0:
        raise ValueError("mean_std: no values")
    mean = f"{v.mean():{'+' if signed else ''}.{digits}f}"
    return mean if v.size == 1 else f"{mean} ± {v.std(ddof=1):.{digits}f}"

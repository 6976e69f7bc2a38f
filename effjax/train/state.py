"""The train state: everything a resumed run needs besides the data iterator."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer steps taken (including skipped ones)
    params: Any
    opt_state: Any
    skipped_in_a_row: jax.Array  # consecutive steps whose update was non-finite
    skipped_total: jax.Array  # all steps whose update was non-finite

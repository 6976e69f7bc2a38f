"""Embedded datasets, your own data (npz files and grain data sources, checked by `validate.py`;
`docs/your_data.md`) and the sharded, checkpointable input pipeline.

`load_dataset(data_config)` returns a `Dataset`: in-memory numpy splits plus the
task specs that models, losses and metrics read. `pipeline.py` turns a split into
global `jax.Array` batches sharded over the mesh's data axes.
"""

from effjax.data.registry import DATASET_NAMES, load_dataset
from effjax.data.specs import Dataset, TaskSpec

__all__ = ["Dataset", "TaskSpec", "load_dataset", "DATASET_NAMES"]

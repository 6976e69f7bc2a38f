"""Sharded, deterministic, checkpointable input pipeline over in-memory splits.

Training order is a grain `MapDataset`: a seeded shuffle of example indices,
re-shuffled every epoch, cut into global batches. Each JAX process keeps only its
own rows of every global batch and gathers only those examples, then the rows of
all processes are assembled into one global `jax.Array` with
`jax.make_array_from_process_local_data`. The global batch at step t is therefore
the same whatever the number of processes, and the grain iterator's state (saved
with the model by `effjax.train.checkpoint`) resumes the stream exactly.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import grain
import jax
import numpy as np

from effjax.data.specs import Dataset


def process_rows(global_batch_size: int) -> slice:
    """The rows of a global batch that belong to this JAX process."""
    n = jax.process_count()
    if global_batch_size % n:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the {n} processes")
    per = global_batch_size // n
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def train_iterator(dataset: Dataset, global_batch_size: int, seed: int) -> grain.DatasetIterator:
    """An endless, per-epoch reshuffled iterator of this process's rows; has get_state/set_state."""
    arrays, rows = dataset.splits["train"], process_rows(global_batch_size)
    ds = (
        grain.MapDataset.range(dataset.num_examples("train"))
        .shuffle(seed=seed)
        .repeat(None)
        .batch(global_batch_size, drop_remainder=True)
        .map(lambda indices: {k: v[indices[rows]] for k, v in arrays.items()})  # this process's rows, gathered
    )
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))


def to_global(local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding, global_batch_size: int):
    """Assembles every process's rows into global arrays sharded along the batch axis."""
    return {k: jax.make_array_from_process_local_data(sharding, v, (global_batch_size,) + v.shape[1:])
            for k, v in local_batch.items()}


def eval_batches(dataset: Dataset, split: str, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every example of a split once, in order; the last batch is padded and `mask` marks real rows."""
    arrays = dataset.splits[split]
    n = dataset.num_examples(split)
    rows = process_rows(global_batch_size)
    for start in range(0, n, global_batch_size):
        idx = np.arange(start, start + global_batch_size)
        valid = idx < n
        idx = np.where(valid, idx, 0)[rows]
        batch = {k: v[idx] for k, v in arrays.items()}
        batch["mask"] = valid[rows].astype(np.float32)
        yield batch

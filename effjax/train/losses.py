"""Per-task losses and evaluation metrics for classification, segmentation and depth.

Losses: softmax cross-entropy (image-level and per-pixel) and L1 for depth (the
usual NYUDv2 choice). Metrics are accumulated as sums over masked examples so
batches (and hosts) combine exactly: accuracy, mean IoU from a confusion matrix,
and depth RMSE.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effjax.data.specs import TaskSpec


def task_loss(task: TaskSpec, prediction: jax.Array, target: jax.Array) -> jax.Array:
    if task.kind in ("classification", "segmentation"):
        return optax.softmax_cross_entropy_with_integer_labels(prediction, target).mean()
    return jnp.abs(prediction - target).mean()


def multitask_loss(tasks: Sequence[TaskSpec], predictions, batch, weights: Mapping[str, float]):
    per_task = {t.name: task_loss(t, predictions[t.name], batch[t.name]) for t in tasks}
    total = sum(float(weights.get(t.name, 1.0)) * per_task[t.name] for t in tasks)
    return total, per_task


def metric_sums(task: TaskSpec, prediction: jax.Array, target: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Sufficient statistics of the task metric over the masked rows of one batch."""
    if task.kind == "classification":
        correct = (prediction.argmax(-1) == target).astype(jnp.float32)
        return {"correct": (correct * mask).sum(), "count": mask.sum()}
    if task.kind == "segmentation":
        pred = prediction.argmax(-1)
        w = jnp.broadcast_to(mask[:, None, None], pred.shape).reshape(-1)
        idx = target.reshape(-1) * task.num_classes + pred.reshape(-1)
        confusion = jnp.zeros(task.num_classes**2, jnp.float32).at[idx].add(w)
        return {"confusion": confusion.reshape(task.num_classes, task.num_classes)}
    sq = (prediction - target) ** 2
    w = jnp.broadcast_to(mask[:, None, None], sq.shape)
    return {"sq_error": (sq * w).sum(), "pixels": w.sum()}


def finalize_metric(task: TaskSpec, sums: Mapping[str, np.ndarray]) -> float:
    if task.kind == "classification":
        return float(sums["correct"] / max(sums["count"], 1.0))
    if task.kind == "segmentation":
        c = np.asarray(sums["confusion"], np.float64)
        inter = np.diag(c)
        union = c.sum(0) + c.sum(1) - inter
        present = union > 0
        return float((inter[present] / union[present]).mean()) if present.any() else 0.0
    return float(np.sqrt(sums["sq_error"] / max(sums["pixels"], 1.0)))

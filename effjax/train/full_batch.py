"""Full-batch Adam fit of a small Flax classifier: the reference models of the PVQ evidence and tests.

The PVQ codec is measured on real trained weights without the trainer's
machinery: a model that fits in one batch, trained with plain Adam on softmax
cross-entropy for a fixed number of steps inside one jitted `fori_loop` (seeded, so the
weights are the same on every run).
"""

from __future__ import annotations

import jax
import numpy as np
import optax


def fit_classifier(model, images: np.ndarray, labels: np.ndarray, steps: int, learning_rate: float, seed: int = 0):
    """Parameters of `model` after `steps` full-batch Adam steps on (images, labels)."""
    optimizer = optax.adam(learning_rate)

    def loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, images), labels).mean()

    def step(_, carry):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def init_and_train(key):
        params = model.init(key, images[:1])
        return jax.lax.fori_loop(0, steps, step, (params, optimizer.init(params)))[0]

    return jax.tree.map(np.asarray, init_and_train(jax.random.key(seed)))

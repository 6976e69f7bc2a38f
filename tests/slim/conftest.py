"""Tiny slimmable models and data shared by the slim tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from effjax.data import load_dataset
from effjax.models import elastic_vit
from effjax.models.elastic_vit import ElasticViT


def model_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(name="slim_vit", patch_size=4, hidden_dim=16, num_layers=1, num_heads=2,
                                       mlp_dim=16, decoder_dim=16, dtype="float32", width_menu=(0.5, 1.0)))
    c.update(overrides)
    return c


def build(tasks, mc) -> ElasticViT:
    return elastic_vit.build(mc, tasks)


@pytest.fixture(scope="session")
def digits():
    return load_dataset(ml_collections.ConfigDict({"name": "digits"}))


@pytest.fixture(scope="session")
def shapes():
    return load_dataset(ml_collections.ConfigDict({"name": "shapes", "seed": 0, "image_size": 16, "num_train": 32,
                                                   "num_val": 8, "num_test": 8}))


@pytest.fixture(scope="session")
def digits_batch(digits):
    split = digits.splits["train"]
    return {k: jnp.asarray(v[:16]) for k, v in split.items()} | {"mask": jnp.ones((16,), jnp.float32)}


def init_params(model, images, seed: int = 0):
    """Max-width parameters, perturbed so that zero-initialized biases and tokens are exercised too."""

    def init(x):
        params = nn.unbox(model.init({"params": jax.random.PRNGKey(seed)}, x)["params"])
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
        return jax.tree.unflatten(treedef, [v + 0.05 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)])

    return jax.jit(init)(images[:1])


def apply(model, params, *args, **kwargs):
    """`model.apply` under one jit (eager op-by-op dispatch compiles every primitive separately)."""
    return jax.jit(lambda p: model.apply({"params": p}, *args, **kwargs))(params)

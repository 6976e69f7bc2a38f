"""Small shared fixtures for the AQT tests: a tiny ViT config, digits tasks, jaxpr walking."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import ml_collections

from effjax.data.digits import TASKS as DIGIT_TASKS  # noqa: F401 (shared by the AQT and qwix tests)

IMAGE_SHAPE = (8, 8, 1)


def tiny_model_config(hidden=32, layers=1) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.name = "mt_vit"
    m.patch_size = 2
    m.hidden_dim = hidden
    m.num_layers = layers
    m.num_heads = 4
    m.mlp_dim = 2 * hidden
    m.decoder_dim = hidden
    m.dtype = "float32"
    return m


def images(n=8, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n,) + IMAGE_SHAPE)


def init_params(model, seed=0):
    return nn.unbox(model.init({"params": jax.random.PRNGKey(seed)}, jnp.zeros((1,) + IMAGE_SHAPE))["params"])


def equations(jaxpr, primitive: str):
    """Every equation of one primitive in a closed jaxpr, sub-jaxprs included."""
    found = []

    def walk(j):
        for eqn in j.eqns:
            if eqn.primitive.name == primitive:
                found.append(eqn)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return found


def dot_generals(jaxpr):
    return equations(jaxpr, "dot_general")

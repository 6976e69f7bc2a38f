"""Builds a model from `config.model` and the dataset's tasks.

Each model family adds one entry to `_BUILDERS`: name -> function
(model_config, tasks, dot_general_provider) -> flax Module. Imports are lazy so a
family's dependencies load only when it is used.
"""

from __future__ import annotations

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def vit_fields(model_config, tasks, dot_general_provider=None) -> dict:
    """The constructor fields every multi-task ViT family shares, from `config.model`."""
    return dict(tasks=tuple(tasks), patch_size=model_config.patch_size, hidden_dim=model_config.hidden_dim,
                num_layers=model_config.num_layers, num_heads=model_config.num_heads, mlp_dim=model_config.mlp_dim,
                decoder_dim=model_config.decoder_dim, dtype=DTYPES[model_config.dtype],
                dot_general_provider=dot_general_provider)


def _mt_vit(model_config, tasks, dot_general_provider):
    from effjax.models.vit import MultiTaskViT, head_fields

    return MultiTaskViT(**vit_fields(model_config, tasks, dot_general_provider), **head_fields(model_config))


_BUILDERS = {
    "mt_vit": _mt_vit,
    "moe_vit": lambda model_config, tasks, dot_general_provider: __import__(
        "effjax.models.moe_vit", fromlist=["build"]).build(model_config, tasks, dot_general_provider),
    "slim_vit": lambda model_config, tasks, dot_general_provider: __import__(
        "effjax.models.slim_vit", fromlist=["build"]).build(model_config, tasks, dot_general_provider),
    "sparse_vit": lambda model_config, tasks, dot_general_provider: __import__(
        "effjax.models.sparse_vit", fromlist=["build"]).build(model_config, tasks, dot_general_provider),
    "super_vit": lambda model_config, tasks, dot_general_provider: __import__(
        "effjax.models.super_vit", fromlist=["build"]).build(model_config, tasks, dot_general_provider),
}
MODEL_NAMES = tuple(_BUILDERS)


def build_model(model_config, tasks, dot_general_provider=None):
    if model_config.name not in _BUILDERS:
        raise ValueError(f"config.model.name={model_config.name!r}: unknown model; allowed: {list(_BUILDERS)}")
    return _BUILDERS[model_config.name](model_config, tasks, dot_general_provider)

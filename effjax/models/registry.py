"""Builds a model from `config.model` and the dataset's tasks.

`MODEL_BUILDERS` maps `config.model.name` to a function (model_config, tasks,
dot_general_provider) -> flax Module.
"""

from __future__ import annotations

from effjax.models import elastic_vit, moe_vit
from effjax.models.vit import DTYPES, vit_fields  # noqa: F401  (re-exported for the builders' callers)

MODEL_BUILDERS = {
    "mt_vit": elastic_vit.build,  # the dense multi-task ViT: the elastic model's full configuration
    "moe_vit": moe_vit.build,
    "slim_vit": elastic_vit.build,  # widths only (configs/slim_vit.py)
    "sparse_vit": elastic_vit.build,  # Sparsifiner with token pruning (configs/sparsifiner_*.py)
    "super_vit": elastic_vit.build,  # widths, Sparsifiner, MoE and QAT bits (configs/supernet.py)
}
MODEL_NAMES = tuple(MODEL_BUILDERS)


def build_model(model_config, tasks, dot_general_provider=None):
    if model_config.name not in MODEL_BUILDERS:
        raise ValueError(f"config.model.name={model_config.name!r}: unknown model; allowed: {list(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[model_config.name](model_config, tasks, dot_general_provider)

"""Which model `config.model.name` builds, and how its configurations are priced.

Each name maps to a `ModelEntry`: a builder (model_config, tasks, dot_general_provider) ->
flax Module, and optionally a cost function (model_config, image_shape, tasks, subnet, **options)
-> list of `effjax.compress.cost.LayerCost` for models whose layers the elastic model's walker
(`effjax.compress.cost_elastic.elastic_layers`, the default) does not know.

Models of your own are registered by name from a module of yours with `register_model`;
`config.model.module` names that module (a dotted path on PYTHONPATH), and every process that
builds the model from a saved config (the main job, `load_run`, the export CLI, serving)
imports it first. Walk-through: docs/your_model.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import Callable, Optional

from effjax.models import elastic_vit, moe_vit
from effjax.models.vit import config_reader


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    builder: Callable  # (model_config, tasks, dot_general_provider) -> flax.linen.Module
    cost_layers: Optional[Callable] = None  # (model_config, image_shape, tasks, subnet, **options) -> [LayerCost]
    module: str = "effjax.models"  # who registered it


_BUILTIN = {
    "mt_vit": ModelEntry(elastic_vit.build),  # the dense multi-task ViT: the elastic model's full configuration
    "moe_vit": ModelEntry(moe_vit.build),
    "slim_vit": ModelEntry(elastic_vit.build),  # widths only (configs/slim_vit.py)
    "sparse_vit": ModelEntry(elastic_vit.build),  # Sparsifiner with token pruning (configs/sparsifiner_*.py)
    "super_vit": ModelEntry(elastic_vit.build),  # widths, Sparsifiner, MoE and QAT bits (configs/supernet.py)
}
_REGISTERED: dict[str, ModelEntry] = {}


def register_model(name: str, builder: Callable, cost_layers: Optional[Callable] = None) -> None:
    """Makes `config.model.name = name` build `builder(model_config, tasks, dot_general_provider)`.

    `cost_layers(model_config, image_shape, tasks, subnet, **options)` prices a configuration (FLOPs,
    parameters, bits) for the search and the export; omit it when the model costs what the elastic
    model's walker says (its layers are the elastic model's). The module that registers a name may
    register it again (a module reloaded); a built-in name, or one another module registered, is refused.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_model: name={name!r} must be a Python identifier")
    if name in _BUILTIN:
        raise ValueError(f"register_model: {name!r} is a built-in model; choose another name")
    for what, fn in (("builder", builder), ("cost_layers", cost_layers)):
        if fn is not None and not callable(fn):
            raise ValueError(f"register_model({name!r}): {what}={fn!r} is not callable")
    caller = sys._getframe(1).f_globals.get("__name__", "?")
    old = _REGISTERED.get(name)
    if old is not None and old.module != caller:
        raise ValueError(f"register_model: {name!r} is already registered by module {old.module!r}")
    _REGISTERED[name] = ModelEntry(builder, cost_layers, caller)


def import_model_module(model_config) -> None:
    """Imports `config.model.module` (where a model of your own registers itself), if the config names one."""
    module = str(config_reader(model_config)("module", "") or "")
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"config.model.module={module!r}: cannot import it ({e}); it must be a dotted module path "
                         "on PYTHONPATH") from None


def model_entry(model_config) -> ModelEntry:
    """The entry of `config.model.name`, after importing `config.model.module`."""
    import_model_module(model_config)
    name = model_config.name
    entry = _BUILTIN.get(name) or _REGISTERED.get(name)
    if entry is None:
        hint = "" if _REGISTERED else " (a model of your own: register it with effjax.models.register_model in the " \
                                       "module config.model.module names)"
        raise ValueError(f"config.model.name={name!r}: unknown model; allowed: {model_names()}{hint}")
    return entry


def model_names() -> list[str]:
    """Built-in and registered model names."""
    return [*_BUILTIN, *_REGISTERED]


def build_model(model_config, tasks, dot_general_provider=None):
    return model_entry(model_config).builder(model_config, tasks, dot_general_provider)

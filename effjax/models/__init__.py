"""Flax Linen modules. Never imports `effjax.train` or `effjax.search`."""

from effjax.models.registry import MODEL_NAMES, build_model, model_names, register_model

__all__ = ["MODEL_NAMES", "build_model", "model_names", "register_model"]

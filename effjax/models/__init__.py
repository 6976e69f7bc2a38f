"""Flax Linen modules. Never imports `effjax.train` or `effjax.search`."""

from effjax.models.registry import build_model, model_names, register_model

__all__ = ["build_model", "model_names", "register_model"]

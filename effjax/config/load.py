"""Loads `configs/<name>.py[:arg]` the way `--config` does, for tools and tests."""

from __future__ import annotations

import importlib.util
import os


def load_config(spec: str):
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(f"effjax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)

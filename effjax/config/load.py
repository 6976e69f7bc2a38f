"""Loads `configs/<name>.py[:arg]` the way `--config` does, for tools and tests, and lets a config file
build on another one next to it (`sibling`) wherever it is run from."""

from __future__ import annotations

import importlib.util
import os


def config_module(path: str):
    """The config file at `path`, imported as a module."""
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(f"effjax_config_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def sibling(config_file: str, name: str):
    """The config file `name` in the directory of `config_file` (a config's `__file__`), imported as a module."""
    return config_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def load_config(spec: str):
    path, _, arg = spec.partition(":")
    return config_module(path).get_config(arg or None)

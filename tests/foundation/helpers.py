"""Shared helpers for the foundation tests."""

import os

from effjax.config.load import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(name: str = "quickstart"):
    c = load_config(os.path.join(REPO, "configs", f"{name}.py") + ":tiny")
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    return c

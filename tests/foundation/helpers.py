"""Shared helpers for the foundation tests."""

import os

from effjax.config.load import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(name: str = "quickstart"):
    c = load_config(os.path.join(REPO, "configs", f"{name}.py") + ":tiny")
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    return c


def untrained_evaluator(config):
    """The main job's `SubnetEvaluator` over a randomly initialized supernet of `config` (one device): enough
    for everything that does not depend on trained weights (costs, limits, export shapes and equality)."""
    import jax

    from effjax.job import subnet_search as ss
    from effjax.train.trainer import build, init_state

    setup = build(config, jax.devices()[:1])
    return ss.SubnetEvaluator(setup, init_state(setup, jax.random.PRNGKey(0)).params, {})

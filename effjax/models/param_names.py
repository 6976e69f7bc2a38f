"""The parameter naming scheme every effjax model uses, and the rename map from the scheme before it.

Scheme 2 (every model today):
  embedding/{patch_embed, cls, pos_embedding}   patch embedding, class token, positions
  blocks_<i>/{ln_attention, attention, ln_mlp, mlp | moe}   encoder block i
  ln_final                                        final LayerNorm
  heads_<task>/{block<j>, ln, hidden, out}        task head (block<j>: its decoder blocks)
  a LayerNorm's `scale` and `bias` sit directly under the norm's name.

Scheme 1 (`mt_vit`, `sparse_vit` and `moe_vit` before the elastic model): `patch_embed`, `cls` and
`pos_embedding` at the top, `block<i>` and `head_<task>` for blocks and heads, and every LayerNorm's
parameters one level down, under `LayerNorm_0`. Checkpoints and exports in scheme 1 load through
`upgrade_path` / `upgrade_params`; resuming training from one is refused (`check_scheme`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax

SCHEME = 2
_LEGACY_TOP = re.compile(r"^(block\d+|head_.+|patch_embed|cls|pos_embedding)$")
_EMBEDDING = ("patch_embed", "cls", "pos_embedding")


def upgrade_path(path: str) -> str:
    """A "/"-joined parameter path in scheme 2 (paths already in scheme 2 are returned unchanged)."""
    top, *rest = path.split("/")
    if top in _EMBEDDING:
        top = f"embedding/{top}"
    elif re.fullmatch(r"block\d+", top):
        top = "blocks_" + top[len("block"):]
    elif top.startswith("head_"):
        top = "heads_" + top[len("head_"):]
    return "/".join([top] + [p for p in rest if p != "LayerNorm_0"])


def is_legacy(params: Mapping[str, Any]) -> bool:
    """Scheme 1 parameters (recognized by their top-level names: every scheme-1 model has `patch_embed` there)."""
    return any(_LEGACY_TOP.match(str(k)) for k in params)


def upgrade_params(params: Mapping[str, Any]) -> dict:
    """A parameter tree in scheme 2 (unchanged when it already is)."""
    flat = flax.traverse_util.flatten_dict(dict(params), sep="/")
    return flax.traverse_util.unflatten_dict({upgrade_path(k): v for k, v in flat.items()}, sep="/")


def check_scheme(params: Mapping[str, Any], where: str) -> None:
    """Raises ValueError (one line) when `params` are in scheme 1: training state cannot resume across it."""
    if is_legacy(params):
        raise ValueError(f"{where}: parameters in naming scheme 1 (block<i>, head_<task>, LayerNorm_0); this version "
                         f"trains in scheme {SCHEME}. Resuming is not supported; start a new --workdir with "
                         "config.train.init_from pointing here (its parameters load through the rename map)")

"""Command-line config overrides checked before absl applies them.

`--config.<a>.<b>=<value>` names a field path. `check` walks that path through the
loaded config and answers a path that does not exist with one line that names the
section and suggests fields: those whose names are close (difflib's ratio), else
those whose one-line comment shares a word stem with the unknown name (so
`search.num_evaluations` suggests `budget  # configurations evaluated ...`). The
comments are read from the config file and `effjax/config/base.py`, where every
field has one.

Open maps (`loss.task_weights`, `search.score_weights`: task name -> weight) take
new keys; absl's flags cannot add keys, so those overrides are taken out of argv
here and applied to the config after parsing.
"""

from __future__ import annotations

import difflib
import math
import os
import re

import ml_collections

OPEN_MAPS = ("loss.task_weights", "search.score_weights")  # task name -> float weight
PREFIX = "--config."
_ASSIGNMENT = re.compile(r"^\s*\w+\.([\w.]+)\s*=[^#]*#\s*(.+?)\s*$")
_BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")


class OverrideError(ValueError):
    """An override names no field of the config, or gives an open map a non-number."""


def field_comments(config_file: str | None) -> dict[str, str]:
    """{dotted path as written after the object name: comment} from config/base.py and the config file's folder."""
    files = [_BASE]
    if config_file:
        folder = os.path.dirname(os.path.abspath(config_file))
        files += sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))
    comments = {}
    for path in files:
        try:
            with open(path) as f:
                lines = f.readlines()
        except OSError:
            continue
        for m in filter(None, map(_ASSIGNMENT.match, lines)):
            comments.setdefault(m.group(1), m.group(2))
    return comments


def _comment_of(comments: dict[str, str], section: str, key: str) -> str | None:
    full = f"{section}.{key}" if section else key
    if full in comments:
        return comments[full]
    for path, comment in comments.items():  # helper modules assign relative to a section object
        if full.endswith("." + path) or path.endswith("." + key) or path == key:
            return comment
    return None


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4}


def suggestions(name: str, keys: list[str], comments: dict[str, str], section: str) -> list[str]:
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
    if close:
        return close
    wanted = _stems(name.replace("_", " "))
    return [k for k in keys if wanted & _stems(_comment_of(comments, section, k) or "")][:3]


def _describe(key: str, comments: dict[str, str], section: str) -> str:
    comment = _comment_of(comments, section, key)
    return f'"{key}" ({comment})' if comment else f'"{key}"'


def check(argv: list[str], config, config_file: str | None) -> tuple[list[str], dict[str, float]]:
    """(argv without the open-map entries, {dotted path: weight}); raises OverrideError for an unknown path."""
    rest, open_entries = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith(PREFIX):
            rest.append(arg)
            continue
        path, eq, value = arg[len(PREFIX):].partition("=")
        if not eq and i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]  # `--config.a.b value`
            arg = f"{arg}={value}"
            i += 1
        node, section = config, ""
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict):
                raise OverrideError(f"{arg}: config.{section} is a value of type {type(node).__name__}, not a section with fields")
            if part not in node:
                if section in OPEN_MAPS and depth == len(parts) - 1:
                    open_entries[path] = _weight(arg, value)
                    break
                comments = field_comments(config_file)  # read only for the refusal
                keys = sorted(node.keys())
                where = f"config.{section}" if section else "the config"
                hint = suggestions(part, keys, comments, section)
                said = f" Did you mean {' or '.join(_describe(k, comments, section) for k in hint)}?" if hint else ""
                raise OverrideError(f"{arg}: unknown field '{part}' in {where}.{said} Fields: {', '.join(keys)}")
            node, section = node[part], f"{section}.{part}" if section else part
        else:
            rest.append(arg)
    return rest, open_entries


def _weight(arg: str, value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        raise OverrideError(f"{arg}: a task weight must be a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise OverrideError(f"{arg}: a task weight must be a finite number >= 0")
    return weight


def apply_open_entries(config, entries: dict[str, float]) -> None:
    for path, weight in entries.items():
        parent, _, key = path.rpartition(".")
        node = config[parent]  # a ConfigDict reads a dotted path
        with node.unlocked():
            node[key] = weight

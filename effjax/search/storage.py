"""Durable record of a search: `evaluations.jsonl`, one JSON line per finished evaluation.

Each line is written and flushed (and fsync'ed) the moment an evaluation is told, so a
killed search loses nothing that finished. On resume, a partial last line (the process
died mid-write) is cut off before new lines are appended. `search.json` records the
space and objectives so that resuming with a different search fails loudly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

EVALUATIONS_FILE = "evaluations.jsonl"
SEARCH_FILE = "search.json"


def to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_search_file(workdir: str, description: dict) -> None:
    """Writes search.json, or checks that an existing one describes the same search."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, SEARCH_FILE)
    description = to_json(description)
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != description:
            raise ValueError(f"workdir {workdir!r} holds a search with a different space or objectives; "
                             f"use a new workdir (found {path})")
        return
    with open(path, "w") as f:
        json.dump(description, f, indent=1)


def read_evaluations(workdir: str) -> list[dict]:
    """Records from evaluations.jsonl, dropping (and truncating away) a partial last line."""
    path = os.path.join(workdir, EVALUATIONS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    records, good_end = [], 0
    for line_end in range(len(data)):
        if data[line_end:line_end + 1] != b"\n":
            continue
        line = data[good_end:line_end].strip()
        if line:
            records.append(json.loads(line))
        good_end = line_end + 1
    if good_end < len(data):  # the last line has no newline: it was cut by a kill
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def append_evaluation(workdir: str, record: dict) -> None:
    path = os.path.join(workdir, EVALUATIONS_FILE)
    with open(path, "a") as f:
        f.write(json.dumps(to_json(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())

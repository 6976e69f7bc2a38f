"""Durable record of a search: `evaluations.jsonl`, one JSON line per finished evaluation.

Each line is written and flushed (and fsync'ed) the moment an evaluation is told, so a
killed search loses nothing that finished. On resume, a partial last line (the process
died mid-write) is cut off before new lines are appended. `search.json` records the
space and objectives so that resuming with a different search fails loudly.

Any other line that is not a valid record can only come from damage outside the
search, and the resume refuses it (`CorruptEvaluations`, naming the file and line)
rather than skipping it: a skipped line would silently change the history the next
proposals are conditioned on, and be lost from `pareto.json`, while the user can
repair or delete the one line (a deleted evaluation is proposed and evaluated again).
"""

from __future__ import annotations

import json
import os

import numpy as np

EVALUATIONS_FILE = "evaluations.jsonl"
SEARCH_FILE = "search.json"


class CorruptEvaluations(ValueError):
    """A line of evaluations.jsonl that is not a finished evaluation's record."""


class SearchMismatch(ValueError):
    """The workdir holds a search of another space or other objectives."""


def check_search_file(workdir: str, description: dict) -> None:
    """Writes search.json, or checks that an existing one describes the same search."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, SEARCH_FILE)
    description = json.loads(json.dumps(description, default=np.generic.item))  # as read back: tuples as lists
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != description:
            raise SearchMismatch(f"workdir {workdir!r} holds a search with a different space or objectives; "
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
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records = [_parse(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if tail.strip():
        try:
            records.append(_parse(path, len(lines) + 1, tail))
            with open(path, "ab") as f:  # complete, only its newline was not written
                f.write(b"\n")
        except CorruptEvaluations:  # cut by a kill mid-write: drop it
            with open(path, "r+b") as f:
                f.truncate(len(data) - len(tail))
    return records


def _parse(path: str, number: int, line: bytes) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        problem = f"not valid JSON ({e})"
    else:
        if isinstance(record, dict) and isinstance(record.get("params"), dict) and isinstance(record.get("values"), dict):
            return record
        problem = "not an evaluation record (needs 'params' and 'values' objects)"
    raise CorruptEvaluations(f"{path} line {number}: {problem}; the search cannot resume past it: repair or delete "
                             "that line (a deleted evaluation is run again) and rerun")


def append_evaluation(workdir: str, record: dict) -> None:
    path = os.path.join(workdir, EVALUATIONS_FILE)
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False, default=np.generic.item) + "\n")  # numpy scalars as numbers
        f.flush()
        os.fsync(f.fileno())

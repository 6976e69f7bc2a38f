"""Content checksums of one checkpoint step: written before the step commits, verified before it restores.

Orbax commits a step atomically (a temporary directory renamed once every process has
written), but it does not check content on restore: a truncated array file can restore
silently. The manifest lists every file of the step with its size and SHA-256. It is
written into the temporary directory just before the rename, so it commits together
with the step and a committed step never lacks it (steps written before manifests
existed are restored unverified, with a warning). The step metadata file Orbax rewrites
during the commit is the one file left out.
"""

from __future__ import annotations

import hashlib
import json
import os

MANIFEST = "effjax_manifest.json"
# Orbax rewrites the step metadata (commit timestamp) during the rename, after the manifest is written
REWRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA",)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(step_dir: str) -> list[str]:
    out = []
    for root, _, files in os.walk(step_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST and rel not in REWRITTEN_AT_COMMIT:
                out.append(rel)
    return sorted(out)


def write(step_dir: str) -> None:
    """Records every file of `step_dir` (size and SHA-256) in `step_dir/effjax_manifest.json`."""
    entries = {}
    for rel in _files(step_dir):
        path = os.path.join(step_dir, rel)
        entries[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    tmp = os.path.join(step_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"files": entries}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


def verify(step_dir: str) -> str | None:
    """None when every file listed matches; otherwise the first problem, naming the file.

    Files that are present but not listed are not checked (Orbax may add metadata after
    commit); every listed file must be there with its recorded size and digest.
    """
    try:
        with open(os.path.join(step_dir, MANIFEST)) as f:
            entries = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} unreadable ({type(e).__name__})"
    for rel, expected in sorted(entries.items()):
        path = os.path.join(step_dir, rel)
        if not os.path.exists(path):
            return f"{rel} is missing"
        size = os.path.getsize(path)
        if size != expected["size"]:
            return f"{rel} has {size} bytes, {expected['size']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{rel} does not match its SHA-256 checksum"
    return None

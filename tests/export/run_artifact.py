"""Runs an exported `predict.jaxexport` with jax alone (no effjax, no flax): the check of a fresh venv.

  python run_artifact.py <export dir> <images.npy> <outputs.npz>
"""

import json
import os
import sys

import jax
import numpy as np


def main(directory: str, images_path: str, out_path: str) -> None:
    with open(os.path.join(directory, "model.json")) as f:
        artifact = json.load(f)["standalone"]["artifact"]
    with open(os.path.join(directory, artifact), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    outputs = exported.call(np.load(images_path))
    np.savez(out_path, **{task: np.asarray(value) for task, value in outputs.items()}, jax_version=jax.__version__)


if __name__ == "__main__":
    main(*sys.argv[1:4])

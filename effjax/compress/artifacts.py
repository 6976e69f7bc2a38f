"""The files of an export beyond `model.bin`: metadata, safetensors weights and the `jax.export` artifact.

`metadata` is what `model.json` says about where the model came from and what it takes;
`write_standalone` loads a written export back, serializes its `predict` with `jax.export`
(StableHLO, batch size symbolic; `standalone.py`), writes `predict.jaxexport` and
`model.safetensors` (the arrays of `model.bin` under the same names) and completes
`model.json` with the output signature and the artifact's figures: its size, platforms,
the cost model's FLOPs per example and XLA's cost analysis of the compiled artifact.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from effjax.compress import export as export_lib
from effjax.compress import signature as signature_lib
from effjax.compress import standalone
from effjax.subnet import SubnetConfig

ARTIFACT = "predict.jaxexport"
SAFETENSORS = "model.safetensors"
PLATFORMS = ("cpu", "cuda", "tpu")


def metadata(config, dataset, tasks, subnet: SubnetConfig, point: Mapping[str, Any]) -> dict:
    """The model.json fields an export writes besides its arrays."""
    return {"model_config": config.model.to_dict(), "tasks": [t.__dict__ for t in tasks], "subnet": subnet.to_dict(),
            "point": dict(point), "dataset": signature_lib.data_block(config.data, dataset),
            "signature": {"input": signature_lib.input_signature(dataset)},
            "label_names": {k: list(v) for k, v in dataset.label_names.items()}}


def _write_safetensors(directory: str, meta: Mapping[str, Any]) -> str:
    from safetensors.numpy import save_file

    arrays = export_lib.read_arrays(directory, meta["arrays"], meta.get("bin_sha256"))
    path = os.path.join(directory, SAFETENSORS)
    save_file({name: np.ascontiguousarray(a) for name, a in arrays.items()}, path,
              # one metadata key: safetensors keeps metadata in a hash map, so two keys come out in either order
              metadata={"format": "effjax export; layout: see model.json: params (bits, active_shape), int4_packing"})
    os.chmod(path, 0o644)  # safetensors writes owner-only; the export's other files are world-readable
    return path


def write_standalone(directory: str, platforms: Sequence[str] = PLATFORMS) -> dict:
    """Writes the artifact and the safetensors file of the export in `directory`; returns the updated model.json."""
    model = export_lib.load(directory)
    meta = dict(model.meta)
    sm = model.standalone_model()
    exported = sm.export(tuple(platforms))
    blob = standalone.serialize(exported)
    with open(os.path.join(directory, ARTIFACT), "wb") as f:
        f.write(blob)
    _write_safetensors(directory, meta)
    shapes = jax.tree.unflatten(exported.out_tree, [a.shape for a in exported.out_avals])  # batch axis symbolic
    meta["signature"] = {"input": meta["signature"]["input"],
                         "outputs": signature_lib.output_signature(model.tasks, shapes, meta.get("label_names", {}))}
    cost = meta.get("point", {}).get("cost", {})
    xla = standalone.xla_flops_per_example(blob, model.image_shape) if "cpu" in platforms else None
    meta["standalone"] = {
        "artifact": ARTIFACT, "safetensors": SAFETENSORS, "bytes": len(blob), "platforms": list(exported.platforms),
        "batch": "symbolic (any size >= 1)", "call": "jax.export.deserialize(open(artifact, 'rb').read()).call(images)",
        "params": sm.num_params(), "padded_params": list(sm.padded),
        "flops_per_example": cost.get("flops"), "xla_flops_per_example": xla,
        "int4_packing": "two codes per byte, low nibble first; code = nibble - 8; value = code * scale[column]",
    }
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta

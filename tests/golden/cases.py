"""Golden outputs of every model preset and of the main job, to guard refactors.

`compute(name)` runs one case with today's public API and returns plain JSON data:
the first 20 training losses from the config's seed, the parameter tree's paths and
shapes, the logits of 8 test images (full network and one compressed configuration),
the cost model's figures, and for the main job the Pareto points and the sha256 of
every exported file. `python -m tests.golden.record` writes them to `golden/*.json`;
`test_golden.py` recomputes and compares. Every case runs on one device, as recorded (the test session simulates 8).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import flax
import jax
import numpy as np

from effjax.subnet import SubnetConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
STEPS = 20

# name -> (config file with its argument, a compressed configuration the preset reads)
PRESETS = {
    "mt_vit": ("quickstart.py:tiny", None),
    "slim_vit": ("slim_vit.py:digits,tiny", dict(encoder_width=0.5, decoder_widths=(("digit", 0.25),))),
    "sparse_vit": ("sparsifiner_digits.py:predictor,tiny", dict(attention_keep_ratio=0.5)),
    "moe_vit": ("moe_digits.py:tiny", dict(moe_top_k=1)),
    "super_vit": ("supernet.py:digits,tiny", dict(encoder_width=0.5, attention_keep_ratio=0.5, moe_top_k=1)),
    "qat_int4": ("qat_digits.py:bits=4,tiny", None),
}
CASES = tuple(PRESETS) + ("main_job",)


def load(spec: str):
    from effjax.config.load import load_config

    c = load_config(os.path.join(REPO, "configs", spec))
    c.train.num_steps = STEPS
    c.log.every_steps = 1
    c.log.progress_bar = False
    c.eval.every_steps = STEPS
    c.checkpoint.every_steps = STEPS
    c.checkpoint.async_save = False
    return c


def _floats(x) -> list:
    return [float(v) for v in np.asarray(x, np.float64).ravel()]


def _logits(model, params, images, subnet) -> dict:
    kwargs = {} if subnet is None else {"subnet": subnet}
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, rngs={"params": jax.random.PRNGKey(0)}, **kwargs))
    out = apply(params, jax.numpy.asarray(images))
    return {k: _floats(v) for k, v in sorted(out.items())}


def _cost(config, tasks, image_shape, subnet) -> dict:
    from effjax.compress import cost_elastic

    return cost_elastic.elastic_cost(config.model, image_shape, tasks, subnet).to_dict()


def preset(name: str) -> dict:
    from effjax.train.trainer import train_and_evaluate

    spec, knobs = PRESETS[name]
    config = load(spec)
    with tempfile.TemporaryDirectory() as workdir:
        result = train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    from effjax.train.trainer import build

    setup = build(config, jax.devices()[:1])
    params = jax.device_get(result.state.params)
    images = setup.dataset.splits["test"]["image"][:8]
    tasks, shape = setup.dataset.tasks, setup.dataset.image_shape
    out = {
        "config": spec,
        "losses": [result.train_losses[s] for s in range(1, STEPS + 1)],
        "metrics": result.metrics,
        "param_shapes": {k: list(v.shape) for k, v in sorted(flax.traverse_util.flatten_dict(params, sep="/").items())},
        "logits_full": _logits(setup.model, params, images, None),
        "cost_full": _cost(config, tasks, shape, None),
    }
    if knobs is not None:
        subnet = SubnetConfig(**knobs)
        out["subnet"] = subnet.to_dict()
        out["logits_subnet"] = _logits(setup.model, params, images, subnet)
        out["cost_subnet"] = _cost(config, tasks, shape, subnet)
    return out


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _model_json_sha256(path: str) -> str:
    """sha256 of what model.json says about the weights (subnet, tasks, per-parameter bits and shapes, arrays);
    the rest (XLA's FLOPs of the artifact, sizes of the lowered programs) depends on the machine."""
    with open(path) as f:
        meta = json.load(f)
    kept = {k: meta.get(k) for k in ("subnet", "tasks", "params", "arrays", "bin_sha256")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def main_job() -> dict:
    from effjax.job.run import run_main_job

    config = load("pipeline.py:digits,tiny")
    with tempfile.TemporaryDirectory() as workdir:
        summary = run_main_job(config, workdir, devices=jax.devices()[:1])
        with open(os.path.join(workdir, "pareto.json")) as f:
            points = json.load(f)
        exports = {}
        for root, _, files in os.walk(os.path.join(workdir, "export")):
            for name in sorted(files):
                if name == "predict.jaxexport":  # its bytes name the devices it was lowered on; tests/export checks it
                    continue
                path = os.path.join(root, name)
                exports[os.path.relpath(path, workdir)] = _model_json_sha256(path) if name == "model.json" else \
                    _sha256(path)
    return {"config": "pipeline.py:digits,tiny", "final_train_loss": summary["final_train_loss"],
            "metrics": summary["metrics"], "points": points, "export_sha256": exports}


# cases whose golden holds bit-level outcomes of training (int4 codes whose rounding flips, exported bytes): they
# are compared on the host that recorded them and re-recorded on another (test_golden.py says how)
HOST_SPECIFIC = ("qat_int4", "main_job")


def host_fingerprint() -> str:
    """What decides XLA's CPU arithmetic here: the processor model, its instruction-set flags and the core count."""
    model, flags = "", ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = " ".join(sorted(value.split()))
    text = f"{model}|{flags}|{os.cpu_count()}"
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores, flags {hashlib.sha256(text.encode()).hexdigest()[:12]}"


def compute(name: str) -> dict:
    out = main_job() if name == "main_job" else preset(name)
    if name in HOST_SPECIFIC:
        out["host"] = host_fingerprint()
    return out


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN_DIR, f"{name}.json")

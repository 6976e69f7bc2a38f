"""Evaluates a trained Sparsifiner (or dense) checkpoint over keep ratios rho; writes a JSON of
metrics and MHSA FLOPs (effjax.compress.cost_sparse) per rho.

  python -m experiments.sparsifiner.evaluate --config=configs/sparsifiner_digits.py:finetune \
      --workdir=/tmp/sparsifiner/digits_s2_rho0.2 --rhos=0.1,0.2,0.3,0.5,1.0 --out=experiments/sparsifiner/results/x.json

`--mask=random` evaluates the same parameters with random masks instead of the
predictor's; `--tokens=X` sets the token keep ratio (token pruning after blocks 1, 2).
A dense `mt_vit` run is evaluated with its own config (`--config=configs/quickstart.py`)
and priced as the sparse model at rho = 1.
"""

from __future__ import annotations

import argparse
import json
import os

import jax

from effjax.compress import cost_elastic, cost_sparse
from effjax.compress.cost import total_cost
from effjax.config.load import load_config
from effjax.subnet import SubnetConfig
from effjax.train import trainer


def evaluate_checkpoint(config_spec: str, workdir: str, rhos, mask: str = "predictor", tokens: float = 1.0,
                        splits=("val", "test")) -> dict:
    config = load_config(config_spec)
    sparse = config.model.name == "sparse_vit"
    if sparse:
        config.model.mask_scores = mask
        config.model.token_pruning_layers = (1, 2) if tokens < 1 else ()
    setup = trainer.build(config, devices=jax.devices()[:1])
    params = trainer.init_params_from(setup, trainer.init_state(setup, jax.random.PRNGKey(0)).params, workdir)
    rows = []
    for rho in (rhos if sparse else [1.0]):
        subnet = SubnetConfig(attention_keep_ratio=rho, token_keep_ratio=tokens if sparse else 1.0)
        layers = cost_elastic.elastic_layers(config.model, setup.dataset.image_shape, setup.dataset.tasks, subnet)
        metrics = {split: trainer.evaluate(setup, params, split, subnet=subnet if sparse else None) for split in splits}
        rows.append({"rho": rho, "token_keep_ratio": subnet.token_keep_ratio, "metrics": metrics,
                     "mhsa_flops": cost_sparse.mhsa_flops(layers), "predictor_flops": cost_sparse.predictor_flops(layers),
                     "total_flops": total_cost(layers, subnet).flops})
        print(json.dumps(rows[-1]), flush=True)
    h, w = setup.dataset.image_shape[:2]
    return {"config": config_spec, "workdir": os.path.abspath(workdir), "mask": mask if sparse else "dense",
            "attention_block": int(config.model.get("attention_block", 0)) if sparse else 0,
            "num_tokens": (h // config.model.patch_size) * (w // config.model.patch_size) + 1,
            "tasks": {t.name: t.metric for t in setup.dataset.tasks}, "recipe": training_recipe(workdir), "rows": rows}


def training_recipe(workdir: str) -> dict:
    """The schedule and loss weights the checkpoint was trained with (from the run's config.json), so that
    tables of recipe variants are written from the results alone."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return {}
    config = json.load(open(path))
    recipe = {k: config["train"][k] for k in ("learning_rate", "num_steps", "schedule", "warmup_steps")}
    recipe.update({k: v for k, v in config.get("sparsifiner", {}).items() if k.startswith("distill_")})
    return recipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--rhos", default="0.1,0.2,0.3,0.5,1.0")
    parser.add_argument("--mask", default="predictor", choices=("predictor", "random"))
    parser.add_argument("--tokens", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = evaluate_checkpoint(args.config, args.workdir, [float(r) for r in args.rhos.split(",")], args.mask,
                                 args.tokens)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

"""The exports' FLOPs: the cost model's figure against XLA's cost analysis of the standalone artifact.

Exports configurations of the main job's supernet (`configs/pipeline.py:digits`, randomly
initialized: FLOPs do not depend on the weights) across the widths, keep ratios, top-k and bits
of its menus, and prints, per configuration, the cost model's FLOPs per example (what the search
and `pareto.json` report), XLA's count on the compiled `jax.export` artifact, and their ratio.

  python -m tools.export_flops                      # prints; raw rows to experiments/pipeline/export_flops.json
  python -m tools.export_flops --write              # also the "export_flops" section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import jax

from effjax.config.load import load_config
from effjax.job import run as pipeline
from effjax.job import subnet_search as ss
from effjax.train.trainer import build, init_state
from tools.bench_report import machine_line, write_section

# (encoder width, decoder widths, weight bits, attention keep ratio, MoE top-k)
CONFIGS = [(0.25, 0.25, 4, 1.0, 1), (0.25, 1.0, 8, 0.5, 2), (0.25, 0.25, 32, 0.25, 1), (0.5, 0.5, 4, 0.5, 1),
           (0.75, 0.25, 4, 1.0, 1), (1.0, 1.0, 8, 1.0, 2)]
RESULTS = os.path.join("experiments", "pipeline", "export_flops.json")


def measure(config_arg: str = "digits") -> list[dict]:
    config = load_config(f"configs/pipeline.py:{config_arg}")
    config.log.progress_bar = False
    setup = build(config, jax.devices()[:1])
    evaluator = ss.SubnetEvaluator(setup, init_state(setup, jax.random.PRNGKey(0)).params, {})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (ew, dw, bits, rho, k) in enumerate(CONFIGS):
            params = {"encoder_width": ew, **{f"decoder_width_{t.name}": dw for t in evaluator.tasks},
                      "weight_bits": bits, "attention_keep_ratio": rho, "moe_top_k": k}
            subnet = ss.subnet_from_params(params, evaluator.tasks)
            directory = os.path.join(tmp, str(i))
            pipeline.export_point(evaluator, {"id": i, "config": subnet.to_dict(), "cost": evaluator.cost(subnet)},
                                  directory, config)
            with open(os.path.join(directory, "model.json")) as f:
                meta = json.load(f)["standalone"]
            rows.append({"config": f"pipeline.py:{config_arg}", **params,
                         "cost_model_flops": meta["flops_per_example"], "xla_flops": meta["xla_flops_per_example"]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| encoder width | decoder widths | bits | keep ratio | top-k | cost model FLOPs | XLA FLOPs (artifact) "
             "| cost / XLA - 1 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dw = r[next(k for k in r if k.startswith("decoder_width_"))]
        ratio = r["cost_model_flops"] / r["xla_flops"] - 1
        lines.append(f"| {r['encoder_width']} | {dw} | {r['weight_bits']} | {r['attention_keep_ratio']} | "
                     f"{r['moe_top_k']} | {r['cost_model_flops']:,.0f} | {r['xla_flops']:,.0f} | {ratio:+.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = parser.parse_args()
    rows = measure()
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(rows, f, indent=1)
    text = (f"Command: `python -m tools.export_flops --write` ({machine_line()}); raw rows in `{RESULTS}`.\n\n"
            + table(rows))
    print(text)
    if args.write:
        write_section("export_flops", "## Exported FLOPs: cost model vs XLA on the artifact\n\n" + text)


if __name__ == "__main__":
    main()

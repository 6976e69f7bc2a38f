"""One knob at a time: what each supernet knob costs and keeps, zero-shot, on a finished pipeline run.

  python -m experiments.pipeline.knobs --workdir=workdirs/pipeline_digits

Loads the run's config and newest checkpoint, then evaluates on the validation split the
full supernet and each knob moved alone (encoder width, attention keep ratio, MoE top-k,
weight bits), with FLOPs and bits from the shared cost model / export plan: the same
`SubnetEvaluator` the search uses. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses


from effjax.job import subnet_search as ss
from effjax.subnet import SubnetConfig
from effjax.train.setup import load_run


def knob_sweep(config) -> list[tuple[str, SubnetConfig]]:
    full = ss.subnet_from_params(ss.full_params(config, ()), ())
    rows = [("full supernet", full)]
    for w in sorted(config.model.width_menu)[:-1]:
        rows.append((f"encoder width {w:g}", dataclasses.replace(full, encoder_width=w)))
    menus = ss.knob_menus(config)
    for r in menus.get("attention_keep_ratio", [])[:-1]:
        rows.append((f"keep ratio {r:g}", dataclasses.replace(full, attention_keep_ratio=r)))
    for k in menus.get("moe_top_k", [])[:-1]:
        rows.append((f"top-{k}", dataclasses.replace(full, moe_top_k=k)))
    for b in sorted(int(b) for b in config.search.bits if int(b) < 32):
        rows.append((f"int{b} weights", dataclasses.replace(full, weight_bits=b, first_last_bits=max(b, 8))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    run = load_run(args.workdir)
    config = run.config
    evaluator = ss.SubnetEvaluator(run.setup, run.params, dict(config.search.score_weights))
    tasks = [t.name for t in evaluator.tasks]
    print(f"| config | score | {' | '.join(tasks)} | MFLOPs | size (KiB) |")
    print("|---|---|" + "---|" * len(tasks) + "---|---|")
    for name, subnet in knob_sweep(config):
        m, c = evaluator.metrics(subnet, "val"), evaluator.cost(subnet)
        print(f"| {name} | {m['score']:.4f} | {' | '.join(f'{m[t]:.4f}' for t in tasks)} | {c['flops'] / 1e6:.3f} | "
              f"{c['bits'] / 8 / 1024:.1f} |", flush=True)


if __name__ == "__main__":
    main()

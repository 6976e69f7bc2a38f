"""Prints the diagnosis table: shapes, `slim_vit`, 300 steps, seed 0, one row per sandwich variant
(results/diag_shapes_*.json written by `run.py`; commands in the README).

  python -m experiments.supernet_recipes.report_diagnosis
"""

from __future__ import annotations

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ("labels", "kd_cikd", "kd", "cikd", "kd_count", "kd_seg", "kd_depth", "kd_depth_std", "kd_depth_l2std", "kd_labels", "kd_warmup")


def load() -> dict[str, dict]:
    runs = {}
    for path in glob.glob(os.path.join(HERE, "results", "diag_shapes_*.json")):
        with open(path) as f:
            runs[os.path.basename(path)[len("diag_shapes_"):-len(".json")]] = json.load(f)
    return runs


def main():
    runs = load()
    print("| variant | full seg mIoU | full depth RMSE | full count | min seg mIoU | min depth RMSE | min count "
          "| grad norm max / sub-configs | KD seg / depth / count (per sub-config) | labels' loss seg / depth / count (max) | CIKD |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in sorted(runs, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        r = runs[name]
        cfg = {c["name"]: c["val"] for c in r["configs"]}
        s = r["train_scalars"]
        get = lambda k: s.get(k, float("nan"))  # noqa: E731
        print(f"| {name} | {100 * cfg['full']['segmentation']:.1f} | {cfg['full']['depth']:.3f} | "
              f"{100 * cfg['full']['count']:.1f} | {100 * cfg['min']['segmentation']:.1f} | {cfg['min']['depth']:.3f} | "
              f"{100 * cfg['min']['count']:.1f} | {get('train/grad_norm/max'):.2f} / {get('train/grad_norm/small'):.2f} | "
              f"{get('train/loss/kd/segmentation_small'):.3f} / {get('train/loss/kd/depth_small'):.3f} / "
              f"{get('train/loss/kd/count_small'):.3f} | {get('train/segmentation/loss'):.3f} / {get('train/depth/loss'):.3f} / "
              f"{get('train/count/loss'):.3f} | {get('train/loss/cikd'):.3f} |")
    print("\nValidation split; scalars are means over the last 5 logged training steps (every 10th step).")


if __name__ == "__main__":
    main()

"""The supernet training recipes compared by this study, each one variant of `configs/slim_vit.py`
(so `configs/supernet.py:<dataset>,<variant>` trains it), and the rule that selects one.

Selection rule (written before any recipe other than the baseline was trained): on the VALIDATION
split, a recipe's figure of merit is the search score (`subnet_search.score`, the mean of the task
scores) averaged over the fixed configurations (`configs_<dataset>.json`) and over seeds 0, 1, 2.
The recipe with the highest figure is selected if it beats the baseline `labels` by more than the
sample std (ddof 1) over seeds of its per-seed difference to the baseline; otherwise the baseline
stays (it is the simplest). Test figures are reported for the selected recipe only as a consequence.

Confirmation (written before seeds 3, 4, 5 ran): a recipe selected over the baseline on seeds 0, 1, 2 is
trained again with the baseline on the fresh seeds 3, 4, 5, and becomes the main job's default for that
dataset only if it passes the same rule there (its mean per-seed validation difference to the baseline,
over the same fixed configurations, is positive and larger than that difference's sample std).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    variant: str  # appended to the config argument, e.g. ",bignas"
    description: str


RECIPES = {
    "labels": Recipe("", "sandwich, every config on the labels (the main job's default)"),
    "bignas": Recipe(",bignas", "sandwich, in-place distillation BigNAS-style (see configs/slim_vit.py)"),
    "shrink": Recipe(",shrink", "OFA progressive shrinking, distilled from the full config (see configs/slim_vit.py)"),
    "bignas_l2std": Recipe(",bignas,kd_depth=l2std", "bignas with depth distilled by squared error in units of the "
                           "teacher's std (the shapes diagnosis' best depth loss)"),
    "project": Recipe(",project", "labels with NASViT's gradient projection (sub-configs' gradient projected off "
                      "the max config's where they conflict)"),
    "max_weight3": Recipe(",max_weight=3", "labels with the max config's label loss weighted 3 (MatFormer-style "
                          "weighting: the full model's loss as heavy as the three sub-configs' together)"),
    "kd_count": Recipe(",kd_count", "labels plus in-place distillation of the count task only (the task whose KD "
                       "left the full configuration intact in the shapes diagnosis)"),
}
BASELINE = "labels"
SEEDS = (0, 1, 2)
FRESH_SEEDS = (3, 4, 5)  # the confirmation of a selected recipe

"""The main job: train a slimmable multi-task supernet once, search its accuracy-FLOPs-bits
Pareto front zero-shot, export the best point per budget.

  python -m effjax.main --config=configs/pipeline.py:digits --workdir=workdirs/pipeline_digits
  python -m effjax.main --config=configs/pipeline.py:shapes --workdir=workdirs/pipeline_shapes
  python -m effjax.export --workdir=workdirs/pipeline_digits --point=<id>

The supernet is `configs/slim_vit.py` (same argument: dataset and variants, e.g.
`digits,tiny`); this file adds the search. Knobs searched: encoder width, one
decoder width per task (the supernet's width menu) and weight bits (post-training,
per-channel symmetric; first and last layers at >= 8 bits).
"""

import os

import ml_collections

from effjax.config_loading import load_config


def get_config(arg: str | None = None):
    c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "supernet.py") + ":" + (arg or "digits"))
    c.search = ml_collections.ConfigDict()
    c.search.budget = 40  # configurations evaluated (zero-shot, on the validation split)
    c.search.batch_size = 4  # proposals per round (qLogNEHVI batch)
    c.search.bits = (4, 8, 32)  # weight bits menu; 32 is float32
    c.search.score_weights = ml_collections.ConfigDict()  # task -> weight of the score (default 1 each)
    if "tiny" in (arg or ""):
        c.search.budget = 6
        c.search.batch_size = 2
    c.log.progress_bar = True
    return c

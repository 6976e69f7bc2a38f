"""Quickstart: a 4-block multi-task ViT on the embedded `digits` (digit, parity, >=5).

Runs in about a minute on a 2-core CPU:

  python -m effjax.main --config=configs/quickstart.py --workdir=/tmp/effjax/quickstart

Variants: `configs/quickstart.py:tiny` (a few steps, for tests and smoke runs).
"""

from effjax.config.base import base_config
from effjax.config.variants import parse_arg


def get_config(arg: str | None = None):
    v = parse_arg(arg, "configs/quickstart.py", tiny=False)
    c = base_config()
    c.data.name = "digits"
    c.model.patch_size = 2  # 8x8 digits -> 16 patches + class token
    c.train.num_steps = 600
    c.train.batch_size = 64
    c.eval.every_steps = 200
    c.checkpoint.every_steps = 200
    if v.tiny:
        c.model.hidden_dim = 32
        c.model.mlp_dim = 64
        c.model.decoder_dim = 32
        c.model.num_layers = 2
        c.train.num_steps = 20
        c.train.warmup_steps = 2
        c.train.batch_size = 32
        c.eval.every_steps = 10
        c.checkpoint.every_steps = 10
        c.log.every_steps = 5
    return c

"""Dense multi-task ViT on procedural `shapes` (segmentation, depth, object count).

32x32 scenes with patch 4 give 64 tokens + class token:

  python -m effjax.main --config=configs/shapes_vit.py --workdir=/tmp/effjax/shapes

Variants: `configs/shapes_vit.py:tiny` (small data and a few steps, for tests).
"""

from effjax.config.base import base_config
from effjax.config.variants import parse_arg


def get_config(arg: str | None = None):
    v = parse_arg(arg, "configs/shapes_vit.py", tiny=False)
    c = base_config()
    c.data.name = "shapes"
    c.data.image_size = 32  # 32x32 scenes
    c.model.patch_size = 4  # 8x8 = 64 patch tokens
    c.model.hidden_dim = 64
    c.model.num_layers = 4
    c.model.decoder_dim = 64
    c.train.num_steps = 1500
    c.train.batch_size = 64
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500
    if v.tiny:
        c.data.num_train, c.data.num_val, c.data.num_test = 256, 64, 64
        c.model.hidden_dim = 32
        c.model.mlp_dim = 64
        c.model.decoder_dim = 32
        c.model.num_layers = 2
        c.train.num_steps = 12
        c.train.warmup_steps = 2
        c.train.batch_size = 32
        c.eval.every_steps = 6
        c.checkpoint.every_steps = 6
        c.log.every_steps = 3
    return c

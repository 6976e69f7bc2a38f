"""Dense multi-task ViT on procedural `shapes` (segmentation, depth, object count).

32x32 scenes with patch 4 give 64 tokens + class token:

  python -m effjax.main --config=configs/shapes_vit.py --workdir=/tmp/effjax/shapes

Variants (comma-separated): `tiny` (small data and a few steps, for tests); `patch=P` (patch size, a
divisor of 32, default 4; `patch=2` gives 16x16 = 256 patch tokens + class token, a long sequence for
attention studies).
"""

from effjax.config.base import base_config
from effjax.config.variants import parse_arg


IMAGE_SIZE = 32


def check_patch(patch: int, config_file: str) -> None:
    if patch < 1 or IMAGE_SIZE % patch:
        raise ValueError(f"{config_file}: patch={patch}: must divide the image size {IMAGE_SIZE}")


def get_config(arg: str | None = None):
    v = parse_arg(arg, "configs/shapes_vit.py", tiny=False, patch=4)
    check_patch(v.patch, "configs/shapes_vit.py")
    c = base_config()
    c.data.name = "shapes"
    c.data.image_size = IMAGE_SIZE  # 32x32 scenes
    c.model.patch_size = v.patch  # 4: 8x8 = 64 patch tokens; 2: 16x16 = 256
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

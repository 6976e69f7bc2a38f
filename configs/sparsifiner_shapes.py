"""Sparsifiner on `shapes`: the configs/shapes_vit.py ViT (64 patches + class token) with sparse attention.

  python -m effjax.main --config=configs/shapes_vit.py --workdir=/tmp/sp/shapes_dense
  python -m effjax.main --config=configs/sparsifiner_shapes.py:predictor --workdir=/tmp/sp/shapes_s1 \
      --config.train.init_from=/tmp/sp/shapes_dense
  python -m effjax.main --config=configs/sparsifiner_shapes.py:finetune,rho=0.25 --workdir=/tmp/sp/shapes_s2 \
      --config.train.init_from=/tmp/sp/shapes_s1

Arguments as in configs/sparsifiner_digits.py (predictor | finetune, rho=X, tokens=X, random, tiny), plus
`patch=P` (patch size, default 4; give the dense run the same, `configs/shapes_vit.py:patch=P`, so that its
checkpoint initializes this model; `patch=2`: 256 patches + class token) and `block=B` (`model.attention_block`:
0, the default, keeps the top ceil(rho N) keys of each query row; B in 16/32/64/128 keeps whole key blocks of B,
`effjax/models/block_sparse.py`).
"""

from effjax.config.base import base_config
from effjax.config.load import sibling
from effjax.models.block_sparse import check_block


def get_config(arg: str | None = None):
    common = sibling(__file__, "sparsifiner_digits.py")
    dense = sibling(__file__, "shapes_vit.py")
    opts = common.parse_stage_arg(arg, "configs/sparsifiner_shapes.py", patch=4, block=0)
    dense.check_patch(opts["patch"], "configs/sparsifiner_shapes.py")
    c = base_config()
    c.data.name = "shapes"
    c.data.image_size = dense.IMAGE_SIZE
    c.model.patch_size = opts["patch"]  # as configs/shapes_vit.py, so its checkpoint initializes this model
    c.model.hidden_dim = 64
    c.model.num_layers = 4
    c.model.decoder_dim = 64
    # stage 1 (predictor only) 400 steps, stage 2 600 (the dense configs/shapes_vit.py schedule is 1500)
    c.train.num_steps = 400 if opts["stage"] == "predictor" else 600
    c.train.warmup_steps = 20
    c.eval.every_steps = 200
    c.checkpoint.every_steps = 200
    common.apply_sparsifiner(c, opts, default_rho=0.25, predictor={"channels": 4, "reduction": 8, "top": 4})
    if opts["block"]:
        check_block(opts["block"])
    c.model.attention_block = opts["block"]
    if opts["tiny"]:
        c.data.num_train, c.data.num_val, c.data.num_test = 256, 64, 64
        c.model.hidden_dim = 32
        c.model.mlp_dim = 64
        c.model.decoder_dim = 32
        c.model.num_layers = 2
        c.train.num_steps = 4
        c.train.warmup_steps = 1
        c.train.batch_size = 32
        c.eval.every_steps = 4
        c.checkpoint.every_steps = 4
        c.log.every_steps = 2
        c.log.progress_bar = False
        c.model.token_pruning_layers = (0,) if opts["tokens"] < 1 else ()
        c.model.sparse_layers = tuple(range(c.model.num_layers))
    return c

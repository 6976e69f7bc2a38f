"""Quantization-aware training (AQT) of the multi-task ViT on `shapes` (segmentation, depth, count).

  python -m effjax.main --config=configs/qat_shapes.py:bits=4 --workdir=/tmp/effjax/qat_shapes_int4

A shorter schedule than `configs/shapes_vit.py` (600 steps, 1000 scenes) so a
family of widths x precisions fits a CPU budget. Variants: `bits=float|8|4`,
`width=<hidden_dim>`, `tiny`, comma-separated.
"""

from effjax.config.load import sibling


def get_config(arg: str | None = None):
    common = sibling(__file__, "qat_common.py")
    v = common.parse_variant(arg, "configs/qat_shapes.py")
    c = sibling(__file__, "shapes_vit.py").get_config("tiny" if v["tiny"] else None)
    if not v["tiny"]:
        c.data.num_train = 1000
        c.train.num_steps = 600
        c.eval.every_steps = 300
        c.checkpoint.every_steps = 300
    c.quant = common.quant_section(v["bits"])
    common.apply_width(c, v["width"])
    return c

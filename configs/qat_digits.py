"""Quantization-aware training (AQT) of the multi-task ViT on `digits`.

Body weights and activations at `bits`, patch embedding and heads at 8 bits:

  python -m effjax.main --config=configs/qat_digits.py:bits=4 --workdir=/tmp/effjax/qat_digits_int4

(needs the trainer to build the provider from `config.quant`; until then
`python -m experiments.quantized_pareto.run --only=digits` calls
`train_and_evaluate` with `provider_from_config(config)`). QAT from a float
checkpoint: `--config.train.init_from=/tmp/effjax/qat_digits_float`.
Variants: `bits=float|8|4`, `width=<hidden_dim>`, `tiny`, comma-separated.
"""

from effjax.config.load import sibling


def get_config(arg: str | None = None):
    common = sibling(__file__, "qat_common.py")
    v = common.parse_variant(arg, "configs/qat_digits.py")
    c = sibling(__file__, "quickstart.py").get_config("tiny" if v["tiny"] else None)
    c.quant = common.quant_section(v["bits"])
    common.apply_width(c, v["width"])
    return c

"""The subnet configuration and its shape rules: the bottom layer of effjax (imports nothing of it)."""

from effjax.subnet.config import FLOAT_BITS, SubnetConfig
from effjax.subnet.shapes import (CHANNEL_DIVISOR, WIDTH_KNOBS, SlimWidths, check_width_subnet, decoder_width,
                                  encoder_widths, kept_key_count, kept_token_count, make_divisible, moe_block_indices,
                                  predictor_rank, slim_widths)

__all__ = [
    "CHANNEL_DIVISOR", "FLOAT_BITS", "WIDTH_KNOBS", "SlimWidths", "SubnetConfig", "check_width_subnet", "decoder_width",
    "encoder_widths", "kept_key_count", "kept_token_count", "make_divisible", "moe_block_indices", "predictor_rank",
    "slim_widths",
]

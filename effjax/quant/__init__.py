"""effjax.quant."""

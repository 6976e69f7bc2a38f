"""Compression bookkeeping: the subnet config, the cost model, expert merging and export.

Never imports `effjax.models`, `effjax.train` or `effjax.search`."""

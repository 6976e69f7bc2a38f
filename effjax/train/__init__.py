"""effjax.train."""

"""effjax.data."""

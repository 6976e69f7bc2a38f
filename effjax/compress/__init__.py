"""effjax.compress."""

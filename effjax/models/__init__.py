"""effjax.models."""

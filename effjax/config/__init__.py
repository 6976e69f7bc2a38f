"""Experiment configs: every field with its default (`base`), loading (`load`) and checks (`validate`)."""

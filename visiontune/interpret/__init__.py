"""Seeing what the model sees: plots, interpretation, report."""

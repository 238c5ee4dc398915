"""Deployment artifacts: packed low-bit weights, integer-only models, file formats."""

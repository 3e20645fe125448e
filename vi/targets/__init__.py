"""Targets: log densities to fit, built-in or adapted from NumPyro models."""

from vi.targets.target import Target, Truth

__all__ = ["Target", "Truth"]

"""Targets: log densities to fit, built-in or adapted from NumPyro models."""

from vi.targets.numpyro_model import from_numpyro, nuts_draws
from vi.targets.target import Target, Truth, from_logdensity, stack_targets

__all__ = ["Target", "Truth", "from_logdensity", "from_numpyro", "nuts_draws", "stack_targets"]

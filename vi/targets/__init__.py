"""Targets: log densities to fit, built-in or adapted from NumPyro models."""

from vi.targets.mixture import bimodal_2d, gaussian_mixture, mixture_10d, unequal_bimodal_2d
from vi.targets.numpyro_model import from_numpyro, nuts_draws
from vi.targets.shapes import banana, funnel, ring
from vi.targets.target import Target, Truth, from_logdensity, stack_targets

__all__ = [
    "Target",
    "Truth",
    "banana",
    "bimodal_2d",
    "from_logdensity",
    "from_numpyro",
    "funnel",
    "gaussian_mixture",
    "mixture_10d",
    "nuts_draws",
    "ring",
    "stack_targets",
    "unequal_bimodal_2d",
]

"""vi: variational inference in JAX."""

from vi.families import MeanFieldParams, mean_field_gaussian
from vi.fitting import FitInfo, FitResult, fit
from vi.objectives import elbo
from vi.targets import Target, Truth, from_logdensity, from_numpyro

__version__ = "0.1.0"

__all__ = [
    "FitInfo",
    "FitResult",
    "MeanFieldParams",
    "Target",
    "Truth",
    "elbo",
    "fit",
    "from_logdensity",
    "from_numpyro",
    "mean_field_gaussian",
]

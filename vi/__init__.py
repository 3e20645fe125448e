"""vi: variational inference in JAX."""

from vi.diagnostics import Diagnostics, diagnose
from vi.families import MeanFieldParams, mean_field_gaussian
from vi.fitting import BatchFitResult, FitInfo, FitResult, fit, fit_batch
from vi.objectives import elbo
from vi.targets import Target, Truth, from_logdensity, from_numpyro, nuts_draws, stack_targets

__version__ = "0.1.0"

__all__ = [
    "BatchFitResult",
    "Diagnostics",
    "FitInfo",
    "FitResult",
    "MeanFieldParams",
    "Target",
    "Truth",
    "diagnose",
    "elbo",
    "fit",
    "fit_batch",
    "from_logdensity",
    "from_numpyro",
    "mean_field_gaussian",
    "nuts_draws",
    "stack_targets",
]

"""vi: variational inference in JAX.

KL kernels (``vi.kernels``), mean-field Gaussian fits by reverse or forward KL
(``vi.fit``, ``vi.fit_batch``), targets (``vi.from_numpyro``,
``vi.from_logdensity``, built-ins in ``vi.targets``), diagnostics
(``vi.diagnose``) and YAML-driven experiments (``vi run``).
"""

from vi import _cpu_devices  # noqa: F401  (first: one JAX CPU device per core)
from vi.diagnostics import Diagnostics, diagnose
from vi.families import MeanFieldParams, mean_field_gaussian
from vi.fitting import BatchFitResult, FitInfo, FitResult, fit, fit_batch
from vi.kernels import (
    DiagNormal,
    KLEstimate,
    MultivariateNormal,
    Normal,
    StandardNormal,
    cross_entropy,
    entropy,
    js_divergence,
    kl,
    kl_divergence,
    kl_divergence_from_logits,
    register_kl,
)
from vi.objectives import elbo
from vi.targets import Target, Truth, from_logdensity, from_numpyro, nuts_draws, stack_targets

__version__ = "0.1.0"

__all__ = [
    "BatchFitResult",
    "DiagNormal",
    "Diagnostics",
    "FitInfo",
    "FitResult",
    "KLEstimate",
    "MeanFieldParams",
    "MultivariateNormal",
    "Normal",
    "StandardNormal",
    "Target",
    "Truth",
    "cross_entropy",
    "diagnose",
    "elbo",
    "entropy",
    "fit",
    "fit_batch",
    "from_logdensity",
    "from_numpyro",
    "js_divergence",
    "kl",
    "kl_divergence",
    "kl_divergence_from_logits",
    "mean_field_gaussian",
    "nuts_draws",
    "register_kl",
    "stack_targets",
]

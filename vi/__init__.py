"""vi: variational inference in JAX.

KL kernels (``vi.kernels``), Gaussian fits (mean-field, full-rank, low-rank) by reverse
KL, forward KL or the Rényi and importance-weighted bounds
(``vi.fit``, ``vi.fit_batch``), targets (``vi.from_numpyro``,
``vi.from_logdensity``, built-ins in ``vi.targets``), diagnostics
(``vi.diagnose``) and YAML-driven experiments (``vifit run``, or ``python -m vi run``).
"""

from vi.devices import set_cpu_devices
from vi.diagnostics import Diagnostics, PSISEstimate, diagnose, psis
from vi.families import (
    DiagNormal,
    FullRank,
    FullRankParams,
    LowRank,
    LowRankParams,
    MeanField,
    MeanFieldParams,
    MultivariateNormal,
    Normal,
    StandardNormal,
)
from vi.fitting import (
    BatchFitResult,
    FitInfo,
    FitResult,
    FixedDraws,
    Stochastic,
    Stopping,
    cache_info,
    clear_caches,
    fit,
    fit_batch,
    set_cache_size,
)
from vi.kernels import (
    Estimate,
    cross_entropy,
    entropy,
    js_divergence,
    kl,
    kl_divergence,
    kl_divergence_from_logits,
    register_kl,
)
from vi.objectives import (
    SNIS,
    Draws,
    Exact,
    ForwardKL,
    ImportanceWeighted,
    Renyi,
    ReverseKL,
    elbo,
)
from vi.targets import Target, Truth, from_logdensity, from_numpyro, nuts_draws, stack_targets

__version__ = "0.1.0"

__all__ = [
    "SNIS",
    "BatchFitResult",
    "DiagNormal",
    "Diagnostics",
    "Draws",
    "Estimate",
    "Exact",
    "FitInfo",
    "FitResult",
    "FixedDraws",
    "ForwardKL",
    "FullRank",
    "FullRankParams",
    "ImportanceWeighted",
    "LowRank",
    "LowRankParams",
    "MeanField",
    "MeanFieldParams",
    "MultivariateNormal",
    "Normal",
    "PSISEstimate",
    "Renyi",
    "ReverseKL",
    "StandardNormal",
    "Stochastic",
    "Stopping",
    "Target",
    "Truth",
    "cache_info",
    "clear_caches",
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
    "nuts_draws",
    "psis",
    "register_kl",
    "set_cache_size",
    "set_cpu_devices",
    "stack_targets",
]

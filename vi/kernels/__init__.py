"""Pure math on arrays: discrete and Gaussian KL kernels, log densities, the KL registry."""

from vi.kernels.discrete import (
    cross_entropy,
    entropy,
    js_divergence,
    kl_div,
    kl_divergence,
    rel_entr,
)
from vi.kernels.gaussian import (
    diag_normal_entropy,
    diag_normal_kl,
    diag_normal_kl_from_scale,
    diag_normal_kl_standard,
    diag_normal_log_prob,
    mvn_entropy,
    mvn_kl,
    mvn_log_prob,
)
from vi.kernels.log_space import entropy_from_logits, kl_divergence_from_logits, kl_divergence_log
from vi.kernels.monte_carlo import (
    MonteCarloEstimate,
    forward_kl_estimate,
    monte_carlo_kl,
    monte_carlo_mean,
    reverse_kl_estimate,
)
from vi.kernels.registry import (
    DiagNormal,
    KLEstimate,
    MultivariateNormal,
    Normal,
    StandardNormal,
    kl,
    mvn_from_covariance,
    register_kl,
)
from vi.kernels.validate import check_probabilities

__all__ = [
    "DiagNormal",
    "KLEstimate",
    "MonteCarloEstimate",
    "MultivariateNormal",
    "Normal",
    "StandardNormal",
    "check_probabilities",
    "cross_entropy",
    "diag_normal_entropy",
    "diag_normal_kl",
    "diag_normal_kl_from_scale",
    "diag_normal_kl_standard",
    "diag_normal_log_prob",
    "entropy",
    "entropy_from_logits",
    "forward_kl_estimate",
    "js_divergence",
    "kl",
    "kl_div",
    "kl_divergence",
    "kl_divergence_from_logits",
    "kl_divergence_log",
    "monte_carlo_kl",
    "monte_carlo_mean",
    "mvn_entropy",
    "mvn_from_covariance",
    "mvn_kl",
    "mvn_log_prob",
    "register_kl",
    "rel_entr",
    "reverse_kl_estimate",
]

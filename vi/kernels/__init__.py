"""Pure math on arrays: KL, entropy and log-density kernels, estimates, the KL registry.

The Gaussian distributions whose closed-form KLs the registry holds are in ``vi.families``.
"""

from vi.kernels.discrete import (
    cross_entropy,
    entropy,
    js_divergence,
    kl_div,
    kl_divergence,
    rel_entr,
)
from vi.kernels.estimate import Estimate, mean_estimate
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
from vi.kernels.monte_carlo import forward_kl_estimate, monte_carlo_kl, reverse_kl_estimate
from vi.kernels.registry import kl, register_converter, register_kl
from vi.kernels.validate import check_probabilities

__all__ = [
    "Estimate",
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
    "mean_estimate",
    "monte_carlo_kl",
    "mvn_entropy",
    "mvn_kl",
    "mvn_log_prob",
    "register_converter",
    "register_kl",
    "rel_entr",
    "reverse_kl_estimate",
]

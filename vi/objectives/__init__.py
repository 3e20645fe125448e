"""Objectives: reverse KL (ELBO), forward KL estimators, and the Rényi and
importance-weighted bounds between them."""

from vi.objectives.elbo import (
    ReverseKL,
    elbo,
    elbo_from_draws,
    moment_matched_draws,
)
from vi.objectives.forward_kl import SNIS, Draws, Exact, ForwardKL
from vi.objectives.renyi import ImportanceWeighted, Renyi, renyi_bound_from_draws

__all__ = [
    "SNIS",
    "Draws",
    "Exact",
    "ForwardKL",
    "ImportanceWeighted",
    "Renyi",
    "ReverseKL",
    "elbo",
    "elbo_from_draws",
    "moment_matched_draws",
    "renyi_bound_from_draws",
]

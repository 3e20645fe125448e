"""Objectives: reverse KL (ELBO) and forward KL estimators."""

from vi.objectives.elbo import (
    ReverseKL,
    elbo,
    elbo_from_draws,
    moment_matched_draws,
)
from vi.objectives.forward_kl import SNIS, Draws, Exact, ForwardKL

__all__ = [
    "SNIS",
    "Draws",
    "Exact",
    "ForwardKL",
    "ReverseKL",
    "elbo",
    "elbo_from_draws",
    "moment_matched_draws",
]

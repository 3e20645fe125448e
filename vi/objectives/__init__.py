"""Objectives: reverse KL (ELBO) and forward KL estimators."""

from vi.objectives.elbo import ElboEstimate, elbo, elbo_from_draws, moment_matched_draws

__all__ = ["ElboEstimate", "elbo", "elbo_from_draws", "moment_matched_draws"]

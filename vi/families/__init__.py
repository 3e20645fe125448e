"""Variational families and the Gaussian distributions they are made of.

Importing this package registers the Gaussians' closed-form KLs with ``vi.kernels.registry``.
"""

from vi.families.gaussian import (
    DiagNormal,
    MultivariateNormal,
    Normal,
    StandardNormal,
    distribution_from_numpyro,
    mvn_from_covariance,
)
from vi.families.mean_field import MeanFieldParams

__all__ = [
    "DiagNormal",
    "MeanFieldParams",
    "MultivariateNormal",
    "Normal",
    "StandardNormal",
    "distribution_from_numpyro",
    "mvn_from_covariance",
]

"""Variational families and the Gaussian distributions they are made of.

Importing this package registers the Gaussians' closed-form KLs with ``vi.kernels.registry``.
"""

from vi.families.family import FullRank, LowRank, MeanField
from vi.families.full_rank import FullRankParams
from vi.families.gaussian import (
    DiagNormal,
    MultivariateNormal,
    Normal,
    StandardNormal,
    distribution_from_numpyro,
    mvn_from_covariance,
)
from vi.families.low_rank import LowRankParams
from vi.families.mean_field import MeanFieldParams

__all__ = [
    "DiagNormal",
    "FullRank",
    "FullRankParams",
    "LowRank",
    "LowRankParams",
    "MeanField",
    "MeanFieldParams",
    "MultivariateNormal",
    "Normal",
    "StandardNormal",
    "distribution_from_numpyro",
    "mvn_from_covariance",
]

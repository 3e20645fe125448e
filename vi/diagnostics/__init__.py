"""Diagnostics of fits: KL in both directions, PSIS k-hat, moment errors, mode coverage."""

from vi.diagnostics.diagnose import Diagnostics, describe, diagnose
from vi.diagnostics.importance import PSISEstimate, psis
from vi.diagnostics.moments import (
    ModeCoverage,
    MomentErrors,
    mode_coverage,
    moment_errors,
    target_mass_in_hdr,
)
from vi.diagnostics.psis import (
    PSISResult,
    interpret_pareto_k,
    pareto_k_threshold,
    pareto_smooth,
)

__all__ = [
    "Diagnostics",
    "ModeCoverage",
    "MomentErrors",
    "PSISEstimate",
    "PSISResult",
    "describe",
    "diagnose",
    "interpret_pareto_k",
    "mode_coverage",
    "moment_errors",
    "pareto_k_threshold",
    "pareto_smooth",
    "psis",
    "target_mass_in_hdr",
]

"""Fitting: the compiled optimisation loops and the ``fit`` entry points."""

from vi.fitting.batch import BatchFitResult, fit_batch
from vi.fitting.distributed import gather, process_share, share_indices
from vi.fitting.fit import fit
from vi.fitting.result import FitResult
from vi.fitting.state import STATUS_NAMES, FitInfo, FitOutput

__all__ = [
    "STATUS_NAMES",
    "BatchFitResult",
    "FitInfo",
    "FitOutput",
    "FitResult",
    "fit",
    "fit_batch",
    "gather",
    "process_share",
    "share_indices",
]

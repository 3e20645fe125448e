"""Fitting: methods as values (``FixedDraws``, ``Stochastic``) and the drivers over their
``init`` / ``step`` (``fit``, ``fit_batch``)."""

from vi.fitting.batch import BatchFitResult, fit_batch
from vi.fitting.distributed import gather, process_share, share_indices
from vi.fitting.fit import fit
from vi.fitting.fixed_draws import FixedDraws, FixedDrawsInfo, FixedDrawsState
from vi.fitting.programs import CacheInfo, cache_info, clear_caches, set_cache_size
from vi.fitting.result import FitResult
from vi.fitting.state import STATUS_NAMES, FitInfo, FitOutput
from vi.fitting.stochastic import Stochastic, StochasticInfo, StochasticState, Stopping

__all__ = [
    "STATUS_NAMES",
    "BatchFitResult",
    "CacheInfo",
    "FitInfo",
    "FitOutput",
    "FitResult",
    "FixedDraws",
    "FixedDrawsInfo",
    "FixedDrawsState",
    "Stochastic",
    "StochasticInfo",
    "StochasticState",
    "Stopping",
    "cache_info",
    "clear_caches",
    "fit",
    "fit_batch",
    "gather",
    "process_share",
    "set_cache_size",
    "share_indices",
]

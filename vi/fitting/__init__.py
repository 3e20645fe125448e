"""Fitting: the compiled optimisation loops and the ``fit`` entry point."""

from vi.fitting.fit import fit
from vi.fitting.result import FitResult
from vi.fitting.state import STATUS_NAMES, FitInfo, FitOutput

__all__ = ["STATUS_NAMES", "FitInfo", "FitOutput", "FitResult", "fit"]

"""Pure math on arrays: discrete and Gaussian KL kernels, log densities."""

from vi.kernels.gaussian import diag_normal_entropy, diag_normal_log_prob

__all__ = ["diag_normal_entropy", "diag_normal_log_prob"]

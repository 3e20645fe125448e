"""The result a user holds: fitted q, its diagnostics, and draws in the model's space."""

import jax
import jax.numpy as jnp

from vi.families import mean_field
from vi.families.mean_field import MeanFieldParams
from vi.fitting.state import CONVERGED, STALLED, STATUS_NAMES, FitInfo, FitOutput
from vi.targets.target import Target


class FitResult:
    """A fitted mean-field Gaussian and what is known about the fit.

    Attributes:
      params: the fitted ``MeanFieldParams`` on the target's unconstrained space.
      info: ``FitInfo`` diagnostics (steps, status, ELBO with its standard error, ...).
      target: the target that was fitted.
    """

    def __init__(self, output: FitOutput, target: Target):
        self.params: MeanFieldParams = output.params
        self.info: FitInfo = output.info
        self.target = target
        self._trace = output.trace

    @property
    def num_steps(self) -> int:
        return int(self.info.num_steps)

    @property
    def stop_reason(self) -> str:
        """Why the fit stopped: ``converged``, ``stalled``, ``max_steps`` or ``nonfinite``."""
        return STATUS_NAMES[int(self.info.status)]

    @property
    def converged(self) -> bool:
        """Whether the fit reached a stationary point (to working precision)."""
        return int(self.info.status) in (CONVERGED, STALLED)

    @property
    def trace(self) -> jax.Array:
        """(num_steps,) the ELBO after each step, as the optimiser saw it."""
        return self._trace[: self.num_steps]

    def sample(self, rng_key: jax.Array, num_samples: int) -> dict[str, jax.Array]:
        """Draws from q, mapped to the model's own space.

        Args:
          rng_key: key for the draws.
          num_samples: how many.

        Returns:
          A dict from site name to an array ``(num_samples, *site_shape)``, with
          deterministic sites included for NumPyro targets (like NumPyro's
          ``Predictive``); ``{"x": (num_samples, D)}`` for a plain target.
        """
        x = mean_field.sample(rng_key, self.params, num_samples)
        if self.target.constrain_fn is None:
            return {"x": x}
        return jax.vmap(self.target.constrain_fn)(x)

    def summary(
        self, rng_key: jax.Array, num_samples: int = 4000
    ) -> dict[str, dict[str, jax.Array]]:
        """Posterior mean and standard deviation of every site, from draws of q.

        Returns:
          ``{site: {"mean": ..., "sd": ...}}`` in the model's own space.
        """
        draws = self.sample(rng_key, num_samples)
        return {
            name: {"mean": jnp.mean(value, axis=0), "sd": jnp.std(value, axis=0)}
            for name, value in draws.items()
        }

    def __repr__(self) -> str:
        info = self.info
        return (
            f"FitResult(dim={self.params.loc.shape[-1]}, {self.stop_reason} after "
            f"{self.num_steps} steps, elbo={float(info.elbo):.4f} ± {float(info.elbo_stderr):.4f}, "
            f"grad_norm={float(info.grad_norm):.2e})"
        )

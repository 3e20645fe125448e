"""The result a user holds: fitted q, its diagnostics, and draws in the model's space."""

import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from vi.families import family
from vi.families.family import Params
from vi.fitting.start import check_rng_key
from vi.fitting.state import CONVERGED, NONFINITE, STATUS_NAMES, FitInfo, FitOutput
from vi.targets.target import Target

_CURE = (
    "Likely cures: float64 (jax.config.update('jax_enable_x64', True)): float32 overflows "
    "in exp, Cholesky factors and log-sum-exps first; a reparametrisation (non-centred "
    "hierarchies, numpyro.infer.reparam.LocScaleReparam; more jitter on a Cholesky); a "
    "smaller init_scale or a start nearer the posterior (init_params=an earlier result)."
)


def concrete(x) -> bool:
    """Whether ``x`` has a value (it is not a tracer inside a user's ``jit``)."""
    return not isinstance(x, jax.core.Tracer)


def _nonfinite_sites(draws: dict) -> dict[str, int]:
    """Sites with non-finite draws, and how many draws each (none when traced)."""
    bad = {}
    for name, value in draws.items():
        if not concrete(value):
            return {}
        value = np.asarray(value)
        count = int(np.sum(~np.all(np.isfinite(value.reshape(value.shape[0], -1)), axis=1)))
        if count:
            bad[name] = count
    return bad


class FitResult:
    """A fitted mean-field Gaussian and what is known about the fit.

    Attributes:
      params: the fitted ``MeanFieldParams`` on the target's unconstrained space.
      info: ``FitInfo`` diagnostics (steps, status, ELBO with its standard error, ...).
      target: the target that was fitted.
    """

    def __init__(self, output: FitOutput, target: Target):
        self.params: Params = output.params
        self.info: FitInfo = output.info
        self.target = target
        self._trace = output.trace
        if concrete(self.info.status) and int(self.info.status) == NONFINITE:
            warnings.warn(self._nonfinite_message(), RuntimeWarning, stacklevel=3)

    @property
    def num_steps(self) -> int:
        return int(self.info.num_steps)

    @property
    def stop_reason(self) -> str:
        """Why the fit stopped: ``converged``, ``stalled``, ``max_steps`` or ``nonfinite``."""
        return STATUS_NAMES[int(self.info.status)]

    @property
    def converged(self) -> bool:
        """Whether the fit is at the optimum of its objective to its method's tolerance
        (``stop_reason == "converged"``); a ``stalled`` fit is not."""
        return int(self.info.status) == CONVERGED

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
        if (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, numbers.Integral)
            or num_samples < 1
        ):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        check_rng_key(rng_key)
        x = family.sample(rng_key, self.params, num_samples)
        draws = (
            {"x": x} if self.target.constrain_fn is None else jax.vmap(self.target.constrain_fn)(x)
        )
        bad = _nonfinite_sites(draws)
        if bad:
            counts = ", ".join(f"{name!r}: {count} of {num_samples}" for name, count in bad.items())
            warnings.warn(
                f"draws of q are not finite in the model's space at sites {{{counts}}}: the "
                f"fit ({self.stop_reason}) puts mass where the model's transforms overflow. "
                f"{_CURE}",
                RuntimeWarning,
                stacklevel=2,
            )
        return draws

    def to_inference_data(
        self,
        rng_key: jax.Array,
        num_draws: int = 1000,
        *,
        coords: dict | None = None,
        dims: dict[str, list[str]] | None = None,
    ):
        """Draws of q as an ArviZ ``InferenceData`` (needs the ``arviz`` extra).

        The posterior group holds every site of the model's own space by its name, with one
        chain of ``num_draws`` draws (they are independent: ArviZ's ESS is ``num_draws``).

        Args:
          rng_key: key for the draws.
          num_draws: draws of q.
          coords, dims: ArviZ's, e.g. ``coords={"school": names}``,
            ``dims={"theta": ["school"]}``.

        Returns:
          An ``arviz.InferenceData`` with a ``posterior`` group.
        """
        try:
            with warnings.catch_warnings():  # ArviZ 0.2x announces its refactor on import
                warnings.simplefilter("ignore", FutureWarning)
                import arviz
        except ImportError as err:
            raise ImportError(
                "to_inference_data needs ArviZ: pip install 'vi[arviz]' (or pip install arviz)"
            ) from err
        draws = self.sample(rng_key, num_draws)
        posterior = {name: np.asarray(value)[None] for name, value in draws.items()}
        return arviz.from_dict(posterior=posterior, coords=coords, dims=dims)

    def _nonfinite_message(self) -> str:
        """Where a fit that ended non-finite failed, and what usually cures it."""
        step = int(self.info.failed_step)
        # Points of q along its diagonal, from 3 sd below its mean to 3 sd above.
        z = jnp.linspace(-3.0, 3.0, 13, dtype=self.params.loc.dtype)[:, None]
        x = self.params.loc + jnp.sqrt(family.variance(self.params)) * z
        with warnings.catch_warnings():  # the model's own complaints about the bad values
            warnings.simplefilter("ignore")
            values = jax.vmap(self.target.logdensity_fn)(x)
            grads = jax.vmap(jax.grad(self.target.logdensity_fn))(x)
        where = ""
        if self.target.constrain_fn is not None:
            bad = _nonfinite_sites(jax.vmap(self.target.constrain_fn)(x))
            if bad:
                where = f" q's draws are not finite in the model's space at sites {sorted(bad)}."
        if not where:
            coords = np.flatnonzero(~np.all(np.isfinite(np.asarray(grads)), axis=0))
            bad_values = int(np.sum(~np.isfinite(np.asarray(values))))
            where = (
                f" At 13 points of the last finite q (its mean ± up to 3 sd), the log density "
                f"is not finite at {bad_values} and its gradient at coordinates "
                f"{coords[:10].tolist()}."
            )
        return (
            f"the fit stopped non-finite at step {step} (dtype "
            f"{self.params.loc.dtype}) and kept its last finite parameters.{where} {_CURE}"
        )

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

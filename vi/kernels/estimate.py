"""A value with its standard error: what every estimator in ``vi`` returns.

The Monte-Carlo KL estimators (``vi.kernels.monte_carlo``), the ELBO
(``vi.objectives.elbo``) and ``vi.kl`` with an ``rng_key`` all return an :class:`Estimate`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Estimate(NamedTuple):
    """An estimated quantity and how far it can be trusted.

    A closed form is an estimate with ``stderr == 0``. A Monte-Carlo mean is within about
    two standard errors of the exact value about 95 % of the time, provided the averaged
    quantity has a finite variance.

    Attributes:
      value: (...) the estimate.
      stderr: (...) its standard error: for a sample mean, the sample standard deviation
        with Bessel's correction over ``sqrt(num_samples)``; 0 when ``value`` is exact.
    """

    value: jax.Array
    stderr: jax.Array


def standard_error(terms: jax.Array) -> jax.Array:
    """The standard error of the mean of ``terms`` (n,), NaN for one term; no gradient
    flows through it (an estimator's value may, its error bar does not)."""
    n = terms.shape[0]
    if n < 2:
        return jnp.full((), jnp.nan, terms.dtype)
    return jnp.std(jax.lax.stop_gradient(terms), ddof=1) / jnp.sqrt(n)


def mean_estimate(values: jax.typing.ArrayLike) -> Estimate:
    """Mean of i.i.d. draws along axis 0, with its standard error.

    Args:
      values: (num_samples, ...) draws of a quantity, ``num_samples >= 2``.

    Returns:
      The estimate, with ``value`` and ``stderr`` of shape (...).

    Raises:
      TypeError: if ``values`` is not floating.
      ValueError: if there are fewer than 2 draws (no standard error).

    Examples:
      >>> est = mean_estimate(jnp.array([1.0, 2.0, 3.0]))
      >>> est.value, est.stderr  # mean 2, sample std 1, over sqrt(3)
      (Array(2., dtype=float32), Array(0.57735026, dtype=float32))
    """
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        raise TypeError(f"values must have a floating dtype, got {values.dtype}")
    if values.ndim == 0 or values.shape[0] < 2:
        raise ValueError(f"values needs at least 2 draws along axis 0, got shape {values.shape}")
    num_samples = values.shape[0]
    mean = jnp.mean(values, axis=0)
    # Two passes (mean, then squared deviations) so the variance does not cancel.
    variance = jnp.sum((values - mean) ** 2, axis=0) / (num_samples - 1)
    return Estimate(mean, jnp.sqrt(variance / num_samples))

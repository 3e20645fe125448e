"""Models whose data plate subsamples (``plate(..., subsample_size=M)``): an unbiased
minibatch log density for stochastic fits; the full data for everything else.

The references are the same model without subsampling (its log density, and its optimum
by the default fixed-draw fit) and NumPyro's own scaling of the minibatch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vi
from vi.objectives.elbo import elbo_from_draws

N, D, M = 2000, 5, 200


def _model(X, y, subsample_size=None):
    coef = numpyro.sample("coef", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0], subsample_size=subsample_size) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=X[idx] @ coef), obs=y[idx])


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    y = (rng.uniform(size=N) < 1 / (1 + np.exp(-X @ np.linspace(-1, 1, D)))).astype(float)
    return X, y


@pytest.mark.slow
def test_the_minibatch_log_density_is_unbiased_for_the_full_one(x64):
    X, y = _data()
    full, sub = vi.from_numpyro(_model, X, y), vi.from_numpyro(_model, X, y, M)
    assert full.minibatch_fn is None and sub.minibatch_fn is not None
    x = jnp.linspace(-0.5, 0.5, D)
    exact = float(full.logdensity_fn(x))
    assert float(sub.logdensity_fn(x)) == pytest.approx(exact, rel=1e-12)
    keys = jax.random.split(jax.random.key(0), 1000)
    estimates = np.asarray(jax.vmap(sub.minibatch_fn, (0, None))(keys, x))
    assert np.std(estimates) > 0  # it does subsample
    assert abs(np.mean(estimates) - exact) < 4 * np.std(estimates) / np.sqrt(len(keys))


@pytest.mark.heavy
def test_a_stochastic_fit_on_minibatches_reaches_the_full_data_optimum(x64):
    X, y = _data()
    full, sub = vi.from_numpyro(_model, X, y), vi.from_numpyro(_model, X, y, M)
    optimum = vi.fit(jax.random.key(0), full)
    result = vi.fit(jax.random.key(0), sub)  # the default for such a target: Stochastic
    assert result.num_steps > 1 and optimum.converged
    eps = jax.random.normal(jax.random.key(9), (4096, D))
    elbo = lambda p: float(elbo_from_draws(p, full.logdensity_fn, eps).value)
    gap = elbo(optimum.params) - elbo(result.params)
    sd = np.exp(np.asarray(optimum.params.log_scale))
    assert gap < 0.3 and np.max(np.abs(result.params.loc - optimum.params.loc) / sd) < 0.5
    assert not result.converged or gap < 0.05
    # The final ELBO, from per-draw minibatches, is unbiased for the full-data one.
    assert abs(float(result.info.elbo) - elbo(result.params)) < 4 * float(result.info.elbo_stderr)


@pytest.mark.slow
def test_the_fixed_draw_method_says_it_needs_the_full_data():
    X, y = _data()
    sub = vi.from_numpyro(_model, X, y, M)
    with pytest.raises(ValueError, match=r"FixedDraws needs the full data.*vi\.Stochastic"):
        vi.fit(jax.random.key(0), sub, method=vi.FixedDraws())


def test_a_latent_site_inside_a_subsampled_plate_is_named():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("rows", y.shape[0], subsample_size=2) as idx:
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 1.0), obs=y[idx])

    with pytest.raises(ValueError, match=r"latent sites \['z in plate rows'\] inside a plate"):
        vi.from_numpyro(model, np.arange(6.0))

"""A fit handed on: continued from an earlier result, and to ArviZ."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vi


def _model(x, y=None):
    theta = numpyro.sample("theta", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(theta[0] + theta[1] * x, noise), obs=y)


X = np.linspace(-1.0, 1.0, 30)
Y = 0.5 + 2.0 * X + 0.3 * np.random.default_rng(0).standard_normal(30)


@pytest.mark.slow
def test_a_fit_continues_from_an_earlier_result():
    target = vi.from_numpyro(_model, X, y=Y)
    rough = vi.fit(jax.random.key(0), target, method=vi.Stochastic(max_steps=250, stopping=None))
    continued = vi.fit(jax.random.key(1), target, init_params=rough)
    from_params = vi.fit(jax.random.key(1), target, init_params=rough.params)
    assert continued.converged
    np.testing.assert_array_equal(continued.params.loc, from_params.params.loc)
    # It lands where a fit from scratch lands.
    scratch = vi.fit(jax.random.key(1), target)
    np.testing.assert_allclose(continued.params.loc, scratch.params.loc, atol=2e-3)


@pytest.mark.heavy
def test_a_batch_continues_from_an_earlier_batch():
    target = vi.from_numpyro(_model, X, y=Y)
    keys = jax.random.split(jax.random.key(0), 3)
    rough = vi.fit_batch(keys, target, method=vi.Stochastic(max_steps=250, stopping=None))
    continued = vi.fit_batch(keys, target, init_params=rough)
    assert continued.stop_reasons == ["converged"] * 3


def test_something_else_as_init_params_is_named():
    target = vi.from_numpyro(_model, X, y=Y)
    with pytest.raises(TypeError, match="or an earlier fit's result, got dict"):
        vi.fit(jax.random.key(0), target, init_params={"loc": jnp.zeros(3)})


@pytest.mark.slow
def test_inference_data_holds_every_site_by_name_and_dims():
    arviz = pytest.importorskip("arviz")
    result = vi.fit(jax.random.key(0), vi.from_numpyro(_model, X, y=Y))
    data = result.to_inference_data(
        jax.random.key(1), 500, coords={"coef": ["intercept", "slope"]}, dims={"theta": ["coef"]}
    )
    assert isinstance(data, arviz.InferenceData)
    posterior = data.posterior
    assert posterior["theta"].dims == ("chain", "draw", "coef")
    assert posterior["theta"].shape == (1, 500, 2) and posterior["noise"].shape == (1, 500)
    draws = result.sample(jax.random.key(1), 500)
    np.testing.assert_allclose(posterior["noise"].values[0], draws["noise"], rtol=1e-6)
    np.testing.assert_allclose(
        posterior["theta"].sel(coef="slope").values[0], draws["theta"][:, 1], rtol=1e-6
    )

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import potential_energy

from vi.targets import from_logdensity, from_numpyro


def _model(x, y=None):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.deterministic("b_sum", b.sum())
    numpyro.sample("y", dist.Normal(x @ b, sigma), obs=y)


def _data():
    x = jax.random.normal(jax.random.key(1), (30, 2))
    return x, x @ jnp.array([1.0, -1.0]) + 0.3 * jax.random.normal(jax.random.key(2), (30,))


@pytest.mark.heavy
def test_log_density_is_numpyros_negative_potential():
    x, y = _data()
    target = from_numpyro(_model, x, y=y)
    assert target.dim == 3
    position = jnp.asarray([0.3, -0.4, -1.0])  # b (2), then log sigma: sites in name order
    params = {"b": position[:2], "sigma": position[2]}
    expected = -potential_energy(_model, (x,), {"y": y}, params)
    np.testing.assert_allclose(target.logdensity_fn(position), expected, rtol=1e-6)


@pytest.mark.slow
def test_constrain_maps_to_the_model_space_with_deterministic_sites():
    x, y = _data()
    target = from_numpyro(_model, x, y=y)
    values = target.constrain_fn(jnp.asarray([0.3, -0.4, -1.0]))
    np.testing.assert_allclose(values["sigma"], np.exp(-1.0), rtol=1e-6)
    np.testing.assert_allclose(values["b_sum"], -0.1, rtol=1e-5)


def test_discrete_latent_sites_are_named():
    def model():
        numpyro.sample("count", dist.Poisson(3.0))
        numpyro.sample("z", dist.Normal())

    with pytest.raises(ValueError, match=r"discrete latent sites \['count'\]"):
        from_numpyro(model)


def test_a_model_without_latents_is_refused():
    def model(y):
        numpyro.sample("y", dist.Normal(), obs=y)

    with pytest.raises(ValueError, match="no latent"):
        from_numpyro(model, jnp.zeros(3))


def test_from_logdensity_flattens_a_pytree():
    target = from_logdensity(
        lambda p: -jnp.sum(p["a"] ** 2) - 2.0 * p["b"] ** 2, {"a": jnp.ones(2), "b": jnp.ones(())}
    )
    assert target.dim == 3
    np.testing.assert_allclose(target.logdensity_fn(jnp.asarray([1.0, 2.0, 3.0])), -(1 + 4) - 18.0)
    assert set(target.constrain_fn(jnp.zeros(3))) == {"a", "b"}
    with pytest.raises(ValueError, match="no entries"):
        from_logdensity(lambda p: 0.0, {})

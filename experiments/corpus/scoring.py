"""How a fit of a corpus model is scored against its stored reference.

Two fits are compared by their ELBOs from the same standard-normal draws (common random
numbers), so the difference has a small variance, and by their means in units of the
posterior standard deviation that NUTS measured.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import vi
from vi.objectives import elbo_from_draws

REFERENCES = pathlib.Path(__file__).resolve().parent / "references"


def load_reference(name: str, references_dir: pathlib.Path = REFERENCES) -> dict:
    """The stored reference of model ``name`` (``references/<name>.json``)."""
    return json.loads((references_dir / f"{name}.json").read_text())


def optimum_params(reference: dict) -> vi.MeanFieldParams:
    """The stored mean-field optimum as ``MeanFieldParams`` (float64 when x64 is on)."""
    optimum = reference["optimum"]
    return vi.MeanFieldParams(jnp.asarray(optimum["loc"]), jnp.asarray(optimum["log_scale"]))


def common_draw_elbos(
    rng_key: jax.Array, logdensity_fn, params: list[vi.MeanFieldParams], num_draws: int
) -> np.ndarray:
    """The ELBO of each of ``params`` from the same ``num_draws`` standard-normal draws.

    Returns:
      (len(params),) ELBOs in nats.
    """
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *params)
    eps = jax.random.normal(rng_key, (num_draws, stacked.loc.shape[-1]), stacked.loc.dtype)
    value = jax.jit(jax.vmap(lambda p: elbo_from_draws(p, logdensity_fn, eps).value))
    return np.asarray(value(stacked), np.float64)


def max_mean_error(loc, reference_loc, posterior_sd) -> float:
    """The largest ``|loc - reference_loc|`` in posterior standard deviations."""
    error = np.abs(np.asarray(loc, np.float64) - np.asarray(reference_loc, np.float64))
    return float(np.max(error / np.asarray(posterior_sd, np.float64)))


def autonormal_params(params: dict) -> vi.MeanFieldParams:
    """NumPyro AutoNormal's ``<site>_auto_loc`` / ``_auto_scale`` as the flat parameters of
    ``vi.from_numpyro``'s space: the same unconstrained sites, flattened in name order."""
    suffix = "_auto_loc"
    names = [k[: -len(suffix)] for k in params if k.endswith(suffix)]
    loc, _ = ravel_pytree({name: params[f"{name}_auto_loc"] for name in names})
    scale, _ = ravel_pytree({name: params[f"{name}_auto_scale"] for name in names})
    return vi.MeanFieldParams(loc, jnp.log(scale))

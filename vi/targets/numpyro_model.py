"""Adapter from a NumPyro model to a ``Target`` on the unconstrained space.

This is the only module of the core that imports numpyro.
"""

from collections.abc import Callable

import jax
import jax.flatten_util
import jax.numpy as jnp

from vi.targets.target import Target


def from_numpyro(
    model: Callable,
    *model_args,
    rng_key: jax.Array | None = None,
    init_strategy: Callable | None = None,
    **model_kwargs,
) -> Target:
    """The posterior of a NumPyro model, on the unconstrained space.

    Latent sites are mapped to R^D by NumPyro's bijections; the log density
    includes the log-Jacobian of those maps, so a Gaussian fitted here is a fit
    to the posterior. ``constrain_fn`` maps back to the model's own space and
    includes deterministic sites.

    Args:
      model: a NumPyro model.
      *model_args: positional arguments of the model (its data).
      rng_key: key for the init strategy and for tracing the model; defaults to
        ``jax.random.key(0)``.
      init_strategy: a NumPyro init strategy; defaults to NumPyro's own default,
        ``init_to_uniform`` (uniform in (-2, 2) on the unconstrained space).
      **model_kwargs: keyword arguments of the model.

    Returns:
      The target.

    Raises:
      ValueError: when the model has discrete latent sites (naming them) or no
        latent sites at all.
    """
    from numpyro import handlers
    from numpyro.infer import init_to_uniform
    from numpyro.infer.util import initialize_model

    rng_key = jax.random.key(0) if rng_key is None else rng_key
    init_key, trace_key = jax.random.split(rng_key)
    model_trace = handlers.trace(handlers.seed(model, trace_key)).get_trace(
        *model_args, **model_kwargs
    )
    latent = {
        name: site
        for name, site in model_trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    discrete = [name for name, site in latent.items() if site["fn"].support.is_discrete]
    if discrete:
        raise ValueError(
            f"model has discrete latent sites {discrete}: a Gaussian family fits continuous "
            "latents only; marginalise them out (e.g. with numpyro's enumeration) or observe them"
        )
    if not latent:
        raise ValueError("model has no latent sample sites: there is nothing to fit")

    info = initialize_model(
        init_key,
        model,
        init_strategy=init_strategy or init_to_uniform,
        model_args=model_args,
        model_kwargs=model_kwargs,
    )
    init_position, unravel = jax.flatten_util.ravel_pytree(info.param_info.z)

    def logdensity_fn(x):
        return -info.potential_fn(unravel(x))

    def constrain_fn(x):
        return info.postprocess_fn(unravel(x))

    return Target(logdensity_fn, jnp.asarray(init_position), constrain_fn=constrain_fn)


def nuts_draws(
    rng_key: jax.Array,
    target: Target,
    num_samples: int,
    *,
    num_warmup: int = 1000,
    num_chains: int = 1,
) -> jax.Array:
    """Draws of a target on its unconstrained space by NumPyro's NUTS.

    For forward-KL fits from MCMC draws (``vi.fit(..., objective="forward_kl",
    draws=nuts_draws(...))``). NUTS runs on ``target.logdensity_fn`` directly, so
    the draws live on the same space as the fit.

    Args:
      rng_key: key for the chains.
      target: any target (a NumPyro model through ``from_numpyro`` or a plain one).
      num_samples: draws kept per chain.
      num_warmup: adaptation steps per chain.
      num_chains: chains, run one after another.

    Returns:
      (num_chains * num_samples, D) draws.
    """
    from numpyro.infer import MCMC, NUTS

    kernel = NUTS(potential_fn=lambda x: -target.logdensity_fn(x))
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    init = jnp.broadcast_to(target.init_position, (num_chains, target.dim))
    mcmc.run(rng_key, init_params=init if num_chains > 1 else target.init_position)
    return mcmc.get_samples()

"""Adapter from a NumPyro model to a ``Target`` on the unconstrained space.

This is the only module of the core that imports numpyro.

The model's array arguments become array leaves of the target (inside
``jax.tree_util.Partial``), while the functions around them are built once per
model and argument structure. So a second ``from_numpyro`` call with new data of
the same shapes gives a target that ``vi.fit`` runs without recompiling, and
targets for several datasets stack into one batched target (``stack_targets``).
"""

import contextlib
import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from vi.targets.target import Target, is_array, strong_array


class _ModelFunctions(NamedTuple):
    logdensity: Callable
    constrain: Callable
    minibatch: Callable
    full_model: Callable


def _split_arguments(model_args, model_kwargs):
    leaves, treedef = jax.tree.flatten((model_args, model_kwargs))
    arrays = [strong_array(leaf) for leaf in leaves if is_array(leaf)]
    static = tuple(None if is_array(leaf) else leaf for leaf in leaves)
    return arrays, treedef, static


def _join_arguments(arrays, treedef, static):
    it = iter(arrays)
    leaves = [next(it) if leaf is None else leaf for leaf in static]
    return jax.tree.unflatten(treedef, leaves)


def _fill_pinned(tree, kept, pinned):
    """Each pinned site's free entries (``tree[name]``: (n, *event)) put back into its full
    unconstrained shape; the pinned entries, whose density is flat, sit at zero."""
    tree = dict(tree)
    for name, shape, num_batch in pinned:
        free = tree[name]
        full = jnp.zeros((int(np.prod(shape[:num_batch])), *free.shape[1:]), free.dtype)
        tree[name] = full.at[kept[name]].set(free).reshape(shape)
    return tree


@functools.lru_cache(maxsize=256)
def _model_functions(model, treedef, static, to_tree, subsampled, pinned) -> _ModelFunctions:
    """The target's functions; ``subsampled``: ``((plate name, size), ...)`` of the plates
    that subsample, which the full log density and ``constrain`` run on all the data;
    ``pinned``: ``((site, unconstrained shape, batch dims), ...)`` of the sites whose
    masked-out entries are pinned (``_fill_pinned``). Each function takes the model's
    arrays and the kept entries' flat batch indices, ``{site: (n,)}``."""
    from numpyro import handlers
    from numpyro.infer.util import constrain_fn, potential_energy

    full = model
    if subsampled:
        sizes = dict(subsampled)

        def all_indices(site):
            if site["type"] == "plate" and site["name"] in sizes:
                return jnp.arange(sizes[site["name"]])
            return None

        full = handlers.substitute(model, substitute_fn=all_indices)

    def inputs(arrays, kept, x):
        """The model's arguments and its latent sites' values at ``x``."""
        model_args, model_kwargs = _join_arguments(arrays, treedef, static)
        return model_args, model_kwargs, _fill_pinned(to_tree(x), kept, pinned)

    def logdensity(arrays, kept, x):
        with _all_the_data():
            return -potential_energy(full, *inputs(arrays, kept, x))

    def constrain(arrays, kept, x):
        with _all_the_data():
            return constrain_fn(full, *inputs(arrays, kept, x), return_deterministic=True)

    def minibatch(arrays, kept, rng_key, x):
        seeded = handlers.seed(model, rng_key)  # the plates draw their subsamples from it
        return -potential_energy(seeded, *inputs(arrays, kept, x))

    return _ModelFunctions(logdensity, constrain, minibatch, full)


@contextlib.contextmanager
def _all_the_data():
    """NumPyro warns when a subsampling plate is handed all its indices; that is the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        yield


def _uniform_if_unset(site):
    """NumPyro's ``init_to_uniform`` for a site that has no value yet (it warns on others)."""
    from numpyro.infer import init_to_uniform

    return None if site["value"] is not None else init_to_uniform(site)


class _Prototype(NamedTuple):
    """What tracing the model tells of its latent sites.

    values: zeros shaped like each latent site on the unconstrained space.
    subsampled: ``((plate name, size), ...)`` of the plates that subsample their data.
    pinned: ``((site, unconstrained shape, batch dims), ...)`` of the sites that a mask
      leaves partly flat (``obs_mask``'s ``<name>_unobserved``, ``handlers.mask`` around a
      latent site).
    kept: ``{site: (n,) flat batch indices}`` of the entries of each pinned site that the
      mask keeps; the others are pinned.
    """

    values: dict
    subsampled: tuple
    pinned: tuple
    kept: dict


def _mask_of(fn):
    """The entries a ``handlers.mask`` (or ``obs_mask``) keeps of a site's batch: ``True``
    for all of them, else a boolean array or ``False``."""
    from numpyro.distributions import MaskedDistribution

    mask = True
    while isinstance(fn, MaskedDistribution):
        mask = fn._mask if mask is True else mask & fn._mask
        fn = fn.base_dist
    return mask


def _unconstrained_prototype(model, trace_key, arrays, treedef, static) -> _Prototype:
    """The latent sites of a model, traced abstractly (``jax.eval_shape``): nothing is
    compiled or run unless a latent site is masked, whose mask is then computed once.

    Latent sites take values as NumPyro's ``init_to_uniform`` gives them, so sites whose
    distribution cannot be sampled (``dist.ImproperUniform``) trace too.

    Raises:
      ValueError: naming the sites a Gaussian family cannot fit (discrete latent sites,
        ``numpyro.param`` and ``numpyro.mutable`` sites), or when there are no latent sites.
    """
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to

    kinds = {"discrete": [], "param": [], "mutable": [], "local": [], "latent": []}
    subsampled = {}
    num_batch = {}

    def trace_sites(rng_key, arrays):
        model_args, model_kwargs = _join_arguments(arrays, treedef, static)
        seeded = handlers.substitute(handlers.seed(model, rng_key), substitute_fn=_uniform_if_unset)
        trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
        values, masks = {}, {}
        for name, site in trace.items():
            if site["type"] == "plate" and site["args"][1] not in (None, site["args"][0]):
                subsampled[name] = int(site["args"][0])
            if site["type"] in ("param", "mutable"):
                kinds[site["type"]].append(name)
            if site["type"] != "sample" or site["is_observed"]:
                continue
            kinds["latent"].append(name)
            local = [f.name for f in site["cond_indep_stack"] if f.name in subsampled]
            if local:
                kinds["local"].append(f"{name} in plate {local[0]}")
            if site["fn"].support.is_discrete:
                kinds["discrete"].append(name)
                continue
            values[name] = biject_to(site["fn"].support).inv(site["value"])
            batch_shape = jnp.shape(site["value"])[: jnp.ndim(site["value"]) - site["fn"].event_dim]
            num_batch[name] = len(batch_shape)
            mask = _mask_of(site["fn"])
            if mask is not True:
                masks[name] = jnp.broadcast_to(mask, batch_shape).reshape(-1)
        return values, masks

    shapes, mask_shapes = jax.eval_shape(trace_sites, trace_key, arrays)
    if kinds["discrete"]:
        raise ValueError(
            f"model has discrete latent sites {kinds['discrete']}: a Gaussian family fits "
            "continuous latents only; marginalise them out (sum over their values with "
            "numpyro.factor, or use a mixture distribution such as dist.MixtureSameFamily), "
            "or observe them"
        )
    if kinds["param"]:
        raise ValueError(
            f"model has numpyro.param sites {kinds['param']}: vi fits a distribution over "
            "latent sample sites and has no point-estimated parameters; give each a prior "
            "(numpyro.sample, e.g. with dist.ImproperUniform for a flat one) or pass its "
            "value as an argument of the model"
        )
    if kinds["mutable"]:
        raise ValueError(
            f"model has numpyro.mutable sites {kinds['mutable']}: a log density that vi "
            "evaluates many times per step must not carry state between evaluations; compute "
            "the value inside the model, or pass it as an argument"
        )
    if kinds["local"]:
        raise ValueError(
            f"model has latent sites {kinds['local']} inside a plate that subsamples its "
            "data: each subsample would fit other values of them; move them out of the "
            "plate, or drop subsample_size to fit all the data"
        )
    if not kinds["latent"]:
        raise ValueError("model has no latent sample sites: there is nothing to fit")
    values = {name: np.zeros(s.shape, s.dtype) for name, s in shapes.items()}
    kept = {}
    if mask_shapes:
        masks = jax.jit(lambda k, a: trace_sites(k, a)[1])(trace_key, arrays)
        kept = {name: np.flatnonzero(np.asarray(mask)) for name, mask in masks.items()}
    pinned = tuple((name, values[name].shape, num_batch[name]) for name in sorted(kept))
    return _Prototype(values, tuple(sorted(subsampled.items())), pinned, kept)


def _free_entries(tree, prototype):
    """``tree`` with each pinned site cut to the entries its mask keeps."""
    tree = dict(tree)
    for name, shape, num_batch in prototype.pinned:
        flat = jnp.reshape(tree[name], (int(np.prod(shape[:num_batch])), *shape[num_batch:]))
        tree[name] = flat[prototype.kept[name]]
    return tree


def _find_initial_point(rng_key, arrays, prototype, model, treedef, static, init_strategy):
    from numpyro.infer.util import find_valid_initial_params

    model_args, model_kwargs = _join_arguments(arrays, treedef, static)
    (z, _, _), is_valid = find_valid_initial_params(
        rng_key,
        model,
        init_strategy=init_strategy,
        model_args=model_args,
        model_kwargs=model_kwargs,
        prototype_params=prototype,
    )
    return z, is_valid


_find_initial_point_jit = jax.jit(
    _find_initial_point, static_argnames=("model", "treedef", "static", "init_strategy")
)


def _initial_point(rng_key, arrays, prototype, model, treedef, static, init_strategy):
    """NumPyro's initial point (its ``find_valid_initial_params``) as one compiled call,
    compiled once per model, argument structure and init strategy."""
    static_args = dict(model=model, treedef=treedef, static=static, init_strategy=init_strategy)
    try:
        return _find_initial_point_jit(rng_key, arrays, prototype, **static_args)
    except TypeError as err:  # an unhashable static argument: compile uncached
        if "hash" not in str(err):
            raise
        return jax.jit(functools.partial(_find_initial_point, **static_args))(
            rng_key, arrays, prototype
        )


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
    includes deterministic sites. Array arguments (numpy or jax) are data: they
    can change between calls, or be stacked over datasets, without recompiling;
    other arguments (Python numbers, strings) are fixed parts of the model.

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

    A model whose plates subsample (``numpyro.plate("data", N, subsample_size=M)``) gives
    a target whose ``logdensity_fn`` uses all N rows and whose ``minibatch_fn`` estimates
    it from M random rows, scaled by N / M as NumPyro scales them (unbiased): stochastic
    fits step on the estimate and the fixed-draw method, which needs the full data, refuses
    it.

    Missing data (``numpyro.sample("y", d, obs=y, obs_mask=mask)``) is imputed: NumPyro
    makes ``y_unobserved`` a latent site of the full shape whose observed entries have a
    flat density, so the fit pins those entries and fits the missing ones only (their
    count is fixed by the mask at this call). The same holds for any latent site under
    ``handlers.mask``. Draws in the model's space carry the imputed ``y`` whole.

    Raises:
      ValueError: naming the sites a Gaussian cannot fit (discrete, ``numpyro.param``,
        ``numpyro.mutable``), when there are no latent sites at all, or no initial point
        with a finite log density.
    """
    from numpyro.infer import init_to_uniform

    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a function), got {type(model).__name__}")
    rng_key = jax.random.key(0) if rng_key is None else rng_key
    init_key, trace_key = jax.random.split(rng_key)
    arrays, treedef, static = _split_arguments(model_args, model_kwargs)
    prototype = _unconstrained_prototype(model, trace_key, arrays, treedef, static)
    # Only the shapes matter to the functions: any unravel of the same structure will do.
    _, to_tree = jax.flatten_util.ravel_pytree(_free_entries(prototype.values, prototype))
    keys = (model, treedef, static, to_tree, prototype.subsampled, prototype.pinned)
    try:
        functions = _model_functions(*keys)
    except TypeError:  # an unhashable static argument: build uncached
        functions = _model_functions.__wrapped__(*keys)
    with _all_the_data():
        z, is_valid = _initial_point(
            init_key,
            arrays,
            prototype.values,
            functions.full_model,
            treedef,
            static,
            init_strategy or init_to_uniform,
        )
    if not bool(is_valid):
        raise ValueError(
            "the model's log density is not finite at any initial point NumPyro tried: check "
            "its data for NaN or out-of-support values, and its init_strategy"
        )
    init_position, _ = jax.flatten_util.ravel_pytree(_free_entries(z, prototype))
    kept = {name: jnp.asarray(index) for name, index in prototype.kept.items()}
    return Target(
        Partial(functions.logdensity, arrays, kept),
        jnp.asarray(init_position),
        constrain_fn=Partial(functions.constrain, arrays, kept),
        minibatch_fn=Partial(functions.minibatch, arrays, kept) if prototype.subsampled else None,
    )


def nuts_draws(
    rng_key: jax.Array,
    target: Target,
    num_samples: int,
    *,
    num_warmup: int = 1000,
    num_chains: int = 1,
) -> jax.Array:
    """Draws of a target on its unconstrained space by NumPyro's NUTS.

    For forward-KL fits from MCMC draws (``vi.fit(...,
    objective=vi.ForwardKL(vi.Draws(nuts_draws(...))))``). NUTS runs on ``target.logdensity_fn`` directly, so
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

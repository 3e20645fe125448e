"""The one module where experiments call the library: fits, reference draws, diagnostics.

Everything above it (``vi.experiments.experiment``) deals in configs and files;
everything here takes a built target and returns NumPy results, so adapting to a
change of the library API touches this file only. Seeds become JAX keys here,
in ``run_keys``, and nowhere else.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import vi
import vi.diagnostics
from vi.experiments import registry, schema
from vi.experiments.schema import Config, FamilySpec, ObjectiveSpec, ReferenceSpec
from vi.families.family import Params
from vi.targets import Target, nuts_draws

DrawsFn = Callable[[str, int], jax.Array]
"""``draws_for(kind, seed)``: the reference draws (N, D) of kind ``exact`` or ``nuts``."""


class RunKeys(NamedTuple):
    """The independent keys of one run, all from its seed."""

    fit: jax.Array
    reference: jax.Array
    diagnose: jax.Array


class RunOutput(NamedTuple):
    """One fit's results as NumPy values, ready to be written.

    Attributes:
      params: q's parameters by field name (mean-field: ``{"loc": (D,), "log_scale": (D,)}``).
      info: the fit's ``FitInfo`` fields and its ``stop_reason``.
      trace: (num_steps,) the objective after each step.
      diagnostics: named diagnostics of the fitted q against the target.
    """

    params: dict[str, np.ndarray]
    info: dict[str, Any]
    trace: np.ndarray
    diagnostics: dict[str, Any]


def run_keys(seed: int) -> RunKeys:
    """The keys of the run with integer ``seed`` (the only place seeds become keys)."""
    return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def reference_kind(target: Target, objective: ObjectiveSpec | None) -> str | None:
    """Which reference draws a fit (or, for ``objective=None``, its diagnostics) needs.

    Returns:
      ``"exact"`` (the target's sampler), ``"nuts"``, or None when none are needed.
    """
    if objective is None:
        return None if target.sample_fn is not None else "nuts"
    return {"draws": "exact", "nuts": "nuts"}.get(objective.estimator)


def reference_draws(rng_key: jax.Array, target: Target, kind: str, spec: ReferenceSpec):
    """Draws of the target on its unconstrained space: (num_draws, D).

    Args:
      rng_key: the run's reference key.
      target: the target.
      kind: ``"exact"`` (``target.sample_fn``) or ``"nuts"`` (NumPyro's NUTS).
      spec: how many draws and NUTS warm-up steps.
    """
    if kind == "exact":
        return target.sample_fn(rng_key, spec.num_draws)
    return nuts_draws(rng_key, target, spec.num_draws, num_warmup=spec.num_warmup)


def fit_options(config: Config, objective: ObjectiveSpec) -> dict[str, Any]:
    """The keyword arguments of ``vi.fit`` for one objective of a config.

    For the ``draws`` and ``nuts`` estimators the objective needs each seed's draws:
    ``objective`` is then None here, and ``with_draws`` fills it in.
    """
    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}
    steps = given(max_steps=config.stopping.max_steps)
    if objective.name == "reverse_kl" and objective.method == "fixed_draws":
        method = vi.FixedDraws(
            **given(num_draws=config.num_samples, tol=config.stopping.tol), **steps
        )
    else:
        optimizer = _optimizer(config.optimizer)
        # As vi.fit's default: the full-rank and low-rank families' ELBO gradients stick
        # the landing.
        sticking = objective.name == "reverse_kl" and config.family != "mean_field_gaussian"
        method = vi.Stochastic(
            optimizer,
            **given(num_samples=config.num_samples),
            **steps,
            **({"stick_the_landing": True} if sticking else {}),
        )
    particles = (
        {} if objective.num_particles is None else {"num_particles": objective.num_particles}
    )
    if objective.name == "reverse_kl":
        fit_objective = vi.ReverseKL()
    elif objective.name == "renyi":
        fit_objective = vi.Renyi(objective.alpha, **particles)
    elif objective.name == "importance_weighted":
        fit_objective = vi.ImportanceWeighted(
            **particles, doubly_reparameterised=bool(objective.doubly_reparameterised)
        )
    elif objective.estimator in ("draws", "nuts"):
        fit_objective = None
    else:
        fit_objective = vi.ForwardKL({"exact": vi.Exact(), "snis": vi.SNIS()}[objective.estimator])
    return dict(
        method=method,
        objective=fit_objective,
        family=family_value(config.family),
        init_scale=config.init.scale,
        init_radius=config.init.radius,
        progress=False,
    )


def family_value(spec) -> vi.MeanField | vi.FullRank | vi.LowRank:
    """The family value of a config's ``family``."""
    if isinstance(spec, FamilySpec):
        return vi.LowRank(spec.rank)
    return {"mean_field_gaussian": vi.MeanField(), "full_rank_gaussian": vi.FullRank()}[spec]


def with_draws(options: dict[str, Any], draws: jax.Array) -> dict[str, Any]:
    """``options`` with the forward-KL objective over given ``draws``."""
    return {**options, "objective": vi.ForwardKL(vi.Draws(draws))}


def _optimizer(spec):
    # vi.fit compiles once per optimizer *object*; one object per spec lets
    # groups with equal optimizers (sweep points, repeated runs) share a compilation.
    return _built_optimizer(_OptimizerKey(repr(schema.to_plain(spec)), spec))


@dataclasses.dataclass(frozen=True)
class _OptimizerKey:
    """An ``OptimizerSpec`` hashed by its plain form (its ``args`` mapping is unhashable)."""

    plain: str
    spec: schema.OptimizerSpec = dataclasses.field(compare=False)


@functools.lru_cache(maxsize=128)
def _built_optimizer(key: _OptimizerKey):
    """The optimizer of a spec, one object per spec while it stays in this bounded cache
    (an evicted spec costs one compilation more); ``_built_optimizer.cache_clear()``
    forgets them all."""
    return registry.build_optimizer(key.spec)


def run_group(
    target: Target,
    config: Config,
    objective: ObjectiveSpec,
    seeds: Sequence[int],
    draws_for: DrawsFn,
    wanted: Sequence[int] | None = None,
) -> Iterator[tuple[int, RunOutput]]:
    """Fits one objective of one config point for several seeds, and diagnoses each fit.

    Without per-seed reference draws the whole group is one compiled
    ``vi.fit_batch`` over all ``seeds``, so a seed's numbers never depend on which
    other seeds were still to do; with per-seed draws (the ``draws`` and ``nuts``
    estimators) the seeds are fitted one by one.

    Args:
      target: the point's target, built in the config's precision.
      config: the point's config (no sweep).
      objective: which fit.
      seeds: every seed of the group.
      draws_for: gives the reference draws of a kind for a seed (cached by the caller).
      wanted: the seeds whose results are needed (default: all).

    Yields:
      ``(seed, RunOutput)`` for each wanted seed, in order, as soon as it is ready.
    """
    wanted = list(seeds) if wanted is None else list(wanted)
    options = fit_options(config, objective)
    kind = reference_kind(target, objective)
    diagnose_kind = reference_kind(target, None)
    if kind is None:
        keys = jnp.stack([run_keys(seed).fit for seed in seeds])
        batch = vi.fit_batch(keys, target, **options)
        fits = {seed: batch[i] for i, seed in enumerate(seeds)}
    else:
        fits = {}
    for seed in wanted:
        keys = run_keys(seed)
        if seed not in fits:
            fits[seed] = vi.fit(keys.fit, target, **with_draws(options, draws_for(kind, seed)))
        result = fits[seed]
        reference = None if diagnose_kind is None else draws_for(diagnose_kind, seed)
        diagnostics = diagnose(
            keys.diagnose,
            target,
            result.params,
            num_samples=config.diagnostics.num_samples,
            draws=reference,
        )
        yield (
            seed,
            RunOutput(
                params={name: np.asarray(value) for name, value in result.params._asdict().items()},
                info={
                    **{name: np.asarray(value) for name, value in result.info._asdict().items()},
                    "stop_reason": result.stop_reason,
                },
                trace=np.asarray(result.trace),
                diagnostics=diagnostics,
            ),
        )


def diagnose(
    rng_key: jax.Array,
    target: Target,
    params: Params,
    *,
    num_samples: int,
    draws: jax.Array | None = None,
) -> dict[str, Any]:
    """Named diagnostics of a fitted q (``vi.diagnose``), with scalar summaries for tables.

    Returns:
      ``vi.diagnose``'s fields (arrays as lists), the k-hat reading and the
      estimation methods in words, and the scalar summaries drawn in figures:
      ``kl_qp``, ``kl_pq`` (with ``_stderr``), ``mean_error`` (the largest
      absolute standardised mean error; ``corrected_mean_error`` the same after PSIS),
      ``log_variance_ratio`` (its mean over
      coordinates) and ``covered_weight``.
    """
    leaves, treedef = jax.tree.flatten(target)
    is_array = [isinstance(leaf, jax.Array) for leaf in leaves]
    arrays = [leaf if a else None for leaf, a in zip(leaves, is_array, strict=True)]
    functions = tuple(None if a else leaf for leaf, a in zip(leaves, is_array, strict=True))
    values = _diagnose_compiled(
        rng_key, arrays, params, draws, static=(treedef, functions), num_samples=num_samples
    )
    summary = vi.diagnostics.describe(values, num_samples)
    summary.update(
        kl_qp=float(values.reverse_kl),
        kl_qp_stderr=float(values.reverse_kl_stderr),
        kl_pq=float(values.forward_kl),
        kl_pq_stderr=float(values.forward_kl_stderr),
        mean_error=float(jnp.max(jnp.abs(values.mean_error))),
        corrected_mean_error=float(jnp.max(jnp.abs(values.corrected_mean_error))),
        log_variance_ratio=float(jnp.mean(values.log_variance_ratio)),
        covered_weight=float(values.covered_mode_weight),
    )
    return summary


@functools.partial(jax.jit, static_argnames=("static", "num_samples"))
def _diagnose_compiled(rng_key, arrays, params, draws, *, static, num_samples):
    treedef, functions = static
    leaves = [a if f is None else f for a, f in zip(arrays, functions, strict=True)]
    target = jax.tree.unflatten(treedef, leaves)
    return vi.diagnose(rng_key, target, params, num_samples=num_samples, draws=draws)

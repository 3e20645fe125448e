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
from vi.experiments.checks import ConfigError
from vi.experiments.schema import Config, FamilySpec, ObjectiveSpec, ReferenceSpec
from vi.families.family import Params
from vi.fitting import programs
from vi.fitting.state import STATUS_NAMES
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


def batch_keys(seeds: Sequence[int]) -> RunKeys:
    """``run_keys`` of many seeds at once: each field (B,), row i that of ``seeds[i]``."""
    if max(seeds) >= 2**31:  # beyond int32: one by one, as jax.random.key takes them
        return RunKeys(*(jnp.stack(keys) for keys in zip(*map(run_keys, seeds), strict=True)))
    split = jax.vmap(lambda seed: jax.random.split(jax.random.key(seed), 3))
    keys = split(jnp.asarray(seeds, jnp.int32))
    return RunKeys(*(keys[:, i] for i in range(3)))


def chosen_devices(devices: str) -> list[jax.Device]:
    """The local devices of a config's ``devices`` (``schema.DEVICES``).

    Raises:
      ConfigError: ``gpu`` where JAX sees no GPU, naming how to install one.
    """
    if devices == "auto":
        return jax.local_devices()
    try:
        return jax.local_devices(backend=devices)
    except RuntimeError:
        raise ConfigError(
            f"{devices!r}: JAX sees no {devices.upper()} here (only {jax.default_backend()} "
            "devices); on an NVIDIA machine install JAX's CUDA wheels with "
            "pip install -e '.[cuda]', or use devices: auto",
            ("devices",),
        ) from None


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
    needs_draws = objective.estimator in ("draws", "nuts")
    return dict(
        method=method,
        objective=None if needs_draws else fit_objective(objective),
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


def fit_objective(objective: ObjectiveSpec, draws: jax.Array | None = None):
    """The ``vi`` objective of a config's objective; ``draws`` of the target for the
    ``draws`` and ``nuts`` estimators (forward KL, Rényi below 0)."""
    particles = (
        {} if objective.num_particles is None else {"num_particles": objective.num_particles}
    )
    estimator = {"exact": vi.Exact(), "snis": vi.SNIS(), None: None}.get(objective.estimator)
    if draws is not None:
        estimator = vi.Draws(draws)
    if objective.name == "reverse_kl":
        return vi.ReverseKL()
    if objective.name == "renyi":
        return vi.Renyi(objective.alpha, **particles, estimator=estimator)
    if objective.name == "importance_weighted":
        return vi.ImportanceWeighted(
            **particles, doubly_reparameterised=bool(objective.doubly_reparameterised)
        )
    return vi.ForwardKL(estimator)


def with_draws(
    options: dict[str, Any], objective: ObjectiveSpec, draws: jax.Array
) -> dict[str, Any]:
    """``options`` with ``objective`` (forward KL, or Rényi below 0) over given ``draws``."""
    return {**options, "objective": fit_objective(objective, draws)}


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
    devices: Sequence[jax.Device] | None = None,
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
      devices: where the batch runs (``vi.fit_batch``; default: the default backend's).

    Yields:
      ``(seed, RunOutput)`` for each wanted seed, in order, as soon as it is ready.
    """
    wanted = list(seeds) if wanted is None else list(wanted)
    options = fit_options(config, objective)
    kind = reference_kind(target, objective)
    diagnose_kind = reference_kind(target, None)
    if kind is None:
        batch = vi.fit_batch(batch_keys(seeds).fit, target, **options, devices=devices)
        row_of = {seed: row for row, seed in enumerate(seeds)}
        rows = [row_of[seed] for seed in wanted]
        params, info, traces = jax.device_get((batch.params, batch.info, batch.trace))
        params, info = jax.tree.map(lambda x: x[np.asarray(rows)], (params, info))
        traces = [traces[row] for row in rows]
    else:  # each seed's fit takes that seed's draws of the target
        fits = [
            vi.fit(
                run_keys(seed).fit,
                target,
                **with_draws(options, objective, draws_for(kind, seed)),
            )
            for seed in wanted
        ]
        params, info = jax.device_get(
            jax.tree.map(lambda *xs: jnp.stack(xs), *[(f.params, f.info) for f in fits])
        )
        traces = [np.asarray(f.trace) for f in fits]
    references = None
    if diagnose_kind is not None:
        references = jnp.stack([draws_for(diagnose_kind, seed) for seed in wanted])
    diagnostics = diagnose_batch(
        batch_keys(wanted).diagnose,
        target,
        jax.tree.map(jnp.asarray, params),
        num_samples=config.diagnostics.num_samples,
        draws=references,
    )
    for i, seed in enumerate(wanted):
        run_info = {name: np.asarray(value[i]) for name, value in info._asdict().items()}
        status = int(run_info["status"])
        yield (
            seed,
            RunOutput(
                params={name: np.asarray(value[i]) for name, value in params._asdict().items()},
                info={**run_info, "stop_reason": STATUS_NAMES[status]},
                trace=np.asarray(traces[i][: int(run_info["num_steps"])]),
                diagnostics=diagnostics[i],
            ),
        )


def diagnose_batch(
    rng_keys: jax.Array,
    target: Target,
    params: Params,
    *,
    num_samples: int,
    draws: jax.Array | None = None,
) -> list[dict[str, Any]]:
    """Named diagnostics of B fitted q (``vi.diagnose``, vmapped), with scalar summaries
    for tables.

    Args:
      rng_keys: (B,) one key per fit.
      target: the target (shared).
      params: q's parameters with a leading axis B.
      num_samples: draws of q (and p) per estimate.
      draws: (B, N, D) draws of p for each fit, for a target without a sampler.

    Returns:
      For each fit, ``vi.diagnose``'s fields (arrays as lists), the k-hat reading and the
      estimation methods in words, and the scalar summaries drawn in figures:
      ``kl_qp``, ``kl_pq`` (with ``_stderr``), ``mean_error`` (the largest
      absolute standardised mean error; ``corrected_mean_error`` the same after PSIS),
      ``log_variance_ratio`` (its mean over coordinates) and ``covered_weight``.
    """
    leaves, treedef = jax.tree.flatten(target)
    is_array = [isinstance(leaf, jax.Array) for leaf in leaves]
    arrays = [leaf if a else None for leaf, a in zip(leaves, is_array, strict=True)]
    functions = tuple(None if a else leaf for leaf, a in zip(leaves, is_array, strict=True))
    values, summaries = jax.device_get(
        _diagnose_compiled(
            rng_keys, arrays, params, draws, static=(treedef, functions), num_samples=num_samples
        )
    )
    described = []
    for i in range(len(rng_keys)):
        row = jax.tree.map(lambda x, i=i: x[i], values)
        summary = vi.diagnostics.describe(row, num_samples)
        summary.update({name: float(value[i]) for name, value in summaries.items()})
        described.append(summary)
    return described


@programs.jit(static_argnames=("static", "num_samples"))
def _diagnose_compiled(rng_keys, arrays, params, draws, *, static, num_samples):
    treedef, functions = static
    leaves = [a if f is None else f for a, f in zip(arrays, functions, strict=True)]
    target = jax.tree.unflatten(treedef, leaves)

    def one(rng_key, params, draws):
        values = vi.diagnose(rng_key, target, params, num_samples=num_samples, draws=draws)
        summaries = dict(
            kl_qp=values.reverse_kl,
            kl_qp_stderr=values.reverse_kl_stderr,
            kl_pq=values.forward_kl,
            kl_pq_stderr=values.forward_kl_stderr,
            mean_error=jnp.max(jnp.abs(values.mean_error)),
            corrected_mean_error=jnp.max(jnp.abs(values.corrected_mean_error)),
            log_variance_ratio=jnp.mean(values.log_variance_ratio),
            covered_weight=values.covered_mode_weight,
        )
        return values, summaries

    return jax.vmap(one, in_axes=(0, 0, None if draws is None else 0))(rng_keys, params, draws)

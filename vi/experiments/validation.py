"""Validating a config mapping (as read from YAML) into a ``Config``, filling in defaults.

Each section has its parser; every failure is a ``ConfigError`` at the key path
of the offending value, saying what is allowed there. Built-in targets and the
optimizer are constructed once, so bad values fail here rather than mid-run.
"""

import inspect
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vi.experiments import checks, registry, schema, sweep
from vi.experiments.checks import ConfigError, Key
from vi.experiments.schema import (
    Config,
    FamilySpec,
    ObjectiveSpec,
    OptimizerSpec,
    ScheduleSpec,
    TargetSpec,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_config(raw: Any, *, base_dir: Path, build: bool = True, code: str = "refuse") -> Config:
    """Validates a config mapping (as read from YAML) and fills in the defaults.

    Args:
      raw: the mapping read from YAML, with any overrides applied.
      base_dir: the directory relative data paths are resolved from.
      build: also construct built-in targets and the optimizer, to catch bad values.
      code: what to do with a model given as an import path (code, where registered
        names are not): ``"refuse"`` it, ``"check"`` its form without importing it (what
        ``vifit validate`` does), or ``"import"`` it (``vifit run --trust-code``).

    Returns:
      The ``Config``; ``sweep`` is kept, unexpanded.

    Raises:
      ConfigError: naming the key path of the first problem.
    """
    raw = checks.mapping(raw, ())
    checks.check_keys(raw, Config._fields, (), required=("name", "target"))
    precision = checks.choice(raw.get("precision", "float32"), ("precision",), schema.PRECISIONS)
    target = _target(raw["target"], ("target",), base_dir, precision if build else None, code)
    family = _family(raw.get("family", "mean_field_gaussian"), ("family",))
    objectives = _objectives(raw.get("objectives"), target, family == "mean_field_gaussian")
    max_runs = _max_runs(raw)
    config = Config(
        name=checks.string(
            raw["name"], ("name",), pattern=_NAME, what="a name of letters, digits, _ . -"
        ),
        target=target,
        family=family,
        objectives=objectives,
        optimizer=_optimizer(raw.get("optimizer"), ("optimizer",), build),
        num_samples=checks.optional(
            raw.get("num_samples"), ("num_samples",), checks.integer, minimum=2
        ),
        seeds=(seeds := _seeds(raw.get("seeds", [0]), ("seeds",), max_runs)),
        precision=precision,
        output=checks.string(raw.get("output", "results"), ("output",)),
        devices=checks.choice(raw.get("devices", "auto"), ("devices",), schema.DEVICES),
        max_runs=max_runs,
        sweep=_sweep(raw.get("sweep", {}), ("sweep",), len(seeds), len(objectives), max_runs),
        **{name: _section(raw.get(name), (name,), cls) for name, cls in schema.SECTIONS.items()},
    )
    fixed = any(objective.method == "fixed_draws" for objective in objectives)
    if fixed and config.num_samples is not None and config.num_samples % 2:
        raise ConfigError(
            f"fixed-draw fits need an even number of draws, got {config.num_samples}",
            ("num_samples",),
        )
    for index, objective in enumerate(objectives):
        particles = objective.num_particles or 8
        if objective.name in ("renyi", "importance_weighted") and config.num_samples is not None:
            if config.num_samples % particles:
                raise ConfigError(
                    f"must be a multiple of objectives.{index}.num_particles ({particles}) "
                    f"for {objective.label}, got {config.num_samples}",
                    ("num_samples",),
                )
    return config


def _target(raw, key: Key, base_dir: Path, precision: str | None, code: str) -> TargetSpec:
    raw = checks.mapping(raw, key)
    checks.check_keys(raw, TargetSpec._fields, key)
    if ("name" in raw) == ("model" in raw):
        raise ConfigError(
            "give exactly one of 'name' (a built-in target) or 'model' (a NumPyro model)", key
        )
    label = checks.optional(raw.get("label"), (*key, "label"), checks.string)
    if "name" in raw:
        return _builtin_target(raw, key, label, precision)
    if "params" in raw:
        raise ConfigError(
            "applies to built-in targets (target.name); a model takes data arrays through "
            "args and kwargs",
            (*key, "params"),
        )
    model_name = checks.string(raw["model"], (*key, "model"))
    model = None
    if registry.is_import_path(model_name) and code != "import":
        checks.registered(registry.check_import_path, model_name, key=(*key, "model"))
        if code == "refuse":
            raise ConfigError(
                f"{model_name!r} is an import path: a config that names code runs that code. "
                "Run with --trust-code to import it (vifit validate never imports it); "
                f"registered models ({', '.join(sorted(registry.MODELS))}) need no flag",
                (*key, "model"),
            )
    else:
        model = checks.registered(registry.model_function, model_name, key=(*key, "model"))
    data_path, arrays = None, {}
    if "data" in raw:
        data_path = (base_dir / checks.string(raw["data"], (*key, "data"))).resolve()
        arrays = checks.registered(registry.load_data, data_path, key=(*key, "data"))
    args = checks.sequence(raw.get("args", []), (*key, "args"))
    kwargs = checks.mapping(raw.get("kwargs", {}), (*key, "kwargs"))
    uses = [((*key, "args", i), name) for i, name in enumerate(args)]
    uses += [((*key, "kwargs", arg), name) for arg, name in kwargs.items()]
    for use_key, name in uses:
        checks.string(name, use_key, what="the name of a data array")
        if name not in arrays:
            have = ", ".join(sorted(arrays)) if data_path else "no data file is given"
            raise ConfigError(
                f"no array {name!r} in the data{registry.did_you_mean(name, arrays)} ({have})",
                use_key,
            )
    try:
        if model is not None:  # an import path not imported (validate): unchecked
            inspect.signature(model).bind(*args, **kwargs)
    except TypeError as error:
        raise ConfigError(f"the arguments do not fit model {model_name!r}: {error}", key) from None
    return TargetSpec(
        model=model_name,
        data=None if data_path is None else str(data_path),
        args=tuple(args),
        kwargs=schema.freeze(kwargs),
        label=label,
    )


def _builtin_target(raw, key: Key, label: str | None, precision: str | None) -> TargetSpec:
    for field in ("data", "args", "kwargs"):
        if field in raw:
            raise ConfigError("applies to NumPyro models (target.model) only", (*key, field))
    name = checks.string(raw["name"], (*key, "name"))
    constructor = checks.registered(registry.target_constructor, name, key=(*key, "name"))
    params = checks.mapping(raw.get("params", {}), (*key, "params"))
    for param, value in params.items():
        checks.numeric_tree(value, (*key, "params", param))
    checks.arguments(constructor, params, (*key, "params"), f"target {name!r}")
    spec = TargetSpec(name=name, params=schema.freeze(params), label=label)
    if precision is not None:
        _construct(spec, (*key, "params"), precision)
    return spec


def _construct(spec: TargetSpec, key: Key, precision: str) -> None:
    import jax

    with jax.enable_x64(precision == "float64"):
        try:
            registry.build_target(spec)
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error), key) from None


def _family(raw, key: Key) -> str | FamilySpec:
    if isinstance(raw, Mapping):
        checks.check_keys(raw, FamilySpec._fields, key, required=("name",))
        name = checks.choice(raw["name"], (*key, "name"), schema.FAMILIES)
        if name != "low_rank_gaussian":
            if "rank" in raw:
                raise ConfigError("applies to low_rank_gaussian only", (*key, "rank"))
            return name
        if "rank" not in raw:
            raise ConfigError(
                "low_rank_gaussian needs a rank, e.g. {name: low_rank_gaussian, rank: 5}", key
            )
        return FamilySpec(name, checks.integer(raw["rank"], (*key, "rank"), minimum=1))
    name = checks.choice(raw, key, schema.FAMILIES)
    if name == "low_rank_gaussian":
        raise ConfigError(
            "low_rank_gaussian needs a rank: write family: {name: low_rank_gaussian, rank: 5}", key
        )
    return name


def _objectives(raw, target: TargetSpec, mean_field: bool = True) -> tuple[ObjectiveSpec, ...]:
    key: Key = ("objectives",)
    if raw is None:
        if mean_field:
            return Config._field_defaults["objectives"]
        return (ObjectiveSpec("reverse_kl", "stochastic", label="reverse KL (stochastic)"),)
    items = checks.sequence(raw, key)
    if not items:
        raise ConfigError("give at least one objective", key)
    objectives, labels = [], {}
    for index, item in enumerate(items):
        spec = _objective(item, (*key, index), target, mean_field)
        if spec.label in labels:
            raise ConfigError(
                f"same label as objectives.{labels[spec.label]} ({spec.label!r}); give it a "
                "different label",
                (*key, index),
            )
        labels[spec.label] = index
        objectives.append(spec)
    return tuple(objectives)


def _objective(raw, key: Key, target: TargetSpec, mean_field: bool = True) -> ObjectiveSpec:
    raw = checks.mapping(raw, key)
    checks.check_keys(raw, ObjectiveSpec._fields, key, required=("name",))
    name = checks.choice(raw["name"], (*key, "name"), schema.OBJECTIVES)
    label = checks.optional(raw.get("label"), (*key, "label"), checks.string)
    only = {
        "alpha": ("renyi",),
        "num_particles": ("renyi", "importance_weighted"),
        "doubly_reparameterised": ("importance_weighted",),
    }
    for field, names in only.items():
        if field in raw and name not in names:
            raise ConfigError(f"applies to {' and '.join(names)} only", (*key, field))
    if name in ("renyi", "importance_weighted"):
        return _particle_objective(raw, key, name, label, target)
    if name == "reverse_kl":
        if "estimator" in raw:
            raise ConfigError("applies to forward_kl only", (*key, "estimator"))
        method = raw.get("method", "fixed_draws" if mean_field else "stochastic")
        method = checks.choice(method, (*key, "method"), schema.REVERSE_METHODS)
        if method == "fixed_draws" and not mean_field:
            raise ConfigError(
                "fixed_draws fits the mean-field family only; with this config's family use "
                "method: stochastic (the default for it)",
                (*key, "method"),
            )
        label = label or f"reverse KL ({method.replace('_', ' ')})"
        return ObjectiveSpec(name, method=method, label=label)
    if "method" in raw:
        raise ConfigError("applies to reverse_kl only", (*key, "method"))
    if "estimator" not in raw:
        allowed = ", ".join(schema.FORWARD_ESTIMATORS)
        raise ConfigError(f"forward_kl needs an estimator (one of {allowed})", key)
    estimator = checks.choice(raw["estimator"], (*key, "estimator"), schema.FORWARD_ESTIMATORS)
    if target.model is not None and estimator in ("exact", "draws"):
        raise ConfigError(
            f"{estimator!r} needs a built-in target (one with an exact sampler); "
            "for a NumPyro model use 'nuts' or 'snis'",
            (*key, "estimator"),
        )
    label = label or (
        "forward KL (NUTS draws)" if estimator == "nuts" else f"forward KL ({estimator})"
    )
    return ObjectiveSpec(name, estimator=estimator, label=label)


def _particle_objective(raw, key: Key, name: str, label, target: TargetSpec) -> ObjectiveSpec:
    if "method" in raw:
        raise ConfigError(
            f"does not apply to {name} (fitted by the stochastic method)", (*key, "method")
        )
    if "estimator" in raw and name == "importance_weighted":
        raise ConfigError(
            "applies to forward_kl and renyi with alpha < 0 only", (*key, "estimator")
        )
    num_particles = checks.optional(
        raw.get("num_particles"), (*key, "num_particles"), checks.integer, minimum=1
    )
    particles = f"K={num_particles or 8}"
    if name == "importance_weighted":
        dreg = raw.get("doubly_reparameterised")
        if dreg is not None and not isinstance(dreg, bool):
            raise ConfigError(
                f"must be true or false, got {checks.describe(dreg)}",
                (*key, "doubly_reparameterised"),
            )
        label = label or f"IW ({particles}{', DReG' if dreg else ''})"
        return ObjectiveSpec(
            name, num_particles=num_particles, doubly_reparameterised=dreg, label=label
        )
    if "alpha" not in raw:
        raise ConfigError("renyi needs alpha (a finite number)", key)
    alpha = checks.number(raw["alpha"], (*key, "alpha"))
    estimator = None
    if alpha < 0:  # fitted from draws of the target (vi.Renyi)
        default = "exact" if target.model is None else None
        estimator = raw.get("estimator", default)
        if estimator is None:
            raise ConfigError(
                "renyi with alpha < 0 fits from draws of the target: a NumPyro model needs "
                "estimator: nuts",
                key,
            )
        estimator = checks.choice(estimator, (*key, "estimator"), schema.COVERING_ESTIMATORS)
        if target.model is not None and estimator != "nuts":
            raise ConfigError(
                f"{estimator!r} needs a built-in target (one with an exact sampler); for a "
                "NumPyro model use 'nuts'",
                (*key, "estimator"),
            )
    elif "estimator" in raw:
        raise ConfigError(
            f"applies to renyi with alpha < 0 only (alpha is {alpha:g}: draws of q)",
            (*key, "estimator"),
        )
    label = label or f"Rényi (α={alpha:g}, {particles})"
    return ObjectiveSpec(
        name, estimator=estimator, alpha=alpha, num_particles=num_particles, label=label
    )


def _optimizer(raw, key: Key, build: bool) -> OptimizerSpec:
    if raw is None:
        return OptimizerSpec()
    raw = dict(checks.mapping(raw, key))
    name = checks.string(raw.pop("name", "adam"), (*key, "name"))
    fn = checks.registered(registry.optimizer_function, name, key=(*key, "name"))
    schedule_raw = raw.pop("schedule", None)
    learning_rate = raw.pop("learning_rate", None)
    schedule = None
    if schedule_raw is not None:
        schedule = _schedule(schedule_raw, (*key, "schedule"))
        if learning_rate is not None:
            raise ConfigError(
                "give either learning_rate or schedule, not both", (*key, "learning_rate")
            )
    else:
        learning_rate = 0.01 if learning_rate is None else learning_rate
        learning_rate = checks.number(learning_rate, (*key, "learning_rate"), positive=True)
    checks.arguments(fn, raw, key, f"optax.{name}", given=("learning_rate",))
    for arg, value in raw.items():
        if not isinstance(value, bool | int | float | str | None):
            raise ConfigError(
                f"expected a number, boolean or string, got {checks.describe(value)}", (*key, arg)
            )
    spec = OptimizerSpec(name, learning_rate, schedule, schema.freeze(raw))
    if build:
        try:
            _trial_step(registry.build_optimizer(spec))
        except Exception as error:  # what the optimizer's own code raises on bad arguments
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ConfigError(
                f"optax.{name} fails on a trial step with these arguments: "
                f"{type(error).__name__}: {first}",
                key,
            ) from None
    return spec


def _trial_step(optimizer) -> None:
    """Traces one ``init`` and ``update`` on a small parameter vector (nothing is computed):
    arguments optax takes without a word (``eps: abc``) fail here, not in the run."""
    import jax
    import jax.numpy as jnp

    params = jnp.zeros(2)
    jax.eval_shape(lambda p: optimizer.update(p, optimizer.init(p), p), params)


def _schedule(raw, key: Key) -> ScheduleSpec:
    raw = dict(checks.mapping(raw, key))
    if "name" not in raw:
        raise ConfigError("missing required key 'name' (an optax schedule)", key)
    name = checks.string(raw.pop("name"), (*key, "name"))
    fn = checks.registered(registry.schedule_function, name, key=(*key, "name"))
    for arg, value in raw.items():
        checks.numeric_tree(value, (*key, arg), mappings=True)
    checks.arguments(fn, raw, key, f"optax.{name}")
    return ScheduleSpec(name, schema.freeze(raw))


def _max_runs(raw) -> int:
    return checks.integer(raw.get("max_runs", schema.MAX_RUNS), ("max_runs",), minimum=1)


def _too_many(count: int, what: str, max_runs: int, key: Key) -> ConfigError:
    return ConfigError(
        f"{what} make {count:,} runs, over max_runs ({max_runs:,}); nothing was expanded. "
        "Raise max_runs in the config if you mean it",
        key,
    )


def _seeds(raw, key: Key, max_runs: int) -> tuple[int, ...]:
    if isinstance(raw, dict):
        checks.check_keys(raw, ("start", "stop"), key, required=("start", "stop"))
        start = checks.integer(raw["start"], (*key, "start"), minimum=0)
        stop = checks.integer(raw["stop"], (*key, "stop"), minimum=start + 1)
        if stop - start > max_runs:  # counted before the range is built
            raise _too_many(stop - start, "the seeds alone", max_runs, key)
        return tuple(range(start, stop))
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"expected a non-empty list of seeds or {{start: 0, stop: 8}}, got "
            f"{checks.describe(raw)}",
            key,
        )
    seeds = tuple(checks.integer(seed, (*key, i), minimum=0) for i, seed in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat: {list(seeds)}", key)
    return seeds


def _sweep(raw, key: Key, seeds: int, objectives: int, max_runs: int):
    raw = checks.mapping(raw, key)
    for sweep_key, values in raw.items():
        head = str(sweep.split_key(sweep_key)[0])
        if head not in Config._fields:
            raise ConfigError(
                f"{head!r} is not a config key{registry.did_you_mean(head, Config._fields)}",
                (*key, sweep_key),
            )
        if head in ("name", "output", "devices", "max_runs", "sweep", "seeds"):
            raise ConfigError(f"{head!r} cannot be swept", (*key, sweep_key))
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"expected a non-empty list of values, got {checks.describe(values)}",
                (*key, sweep_key),
            )
    sweep_size = math.prod(len(values) for values in raw.values())
    if sweep_size * seeds * objectives > max_runs:
        what = f"the sweep's {sweep_size:,} points × {objectives} objective(s) × {seeds} seed(s)"
        raise _too_many(sweep_size * seeds * objectives, what, max_runs, key)
    return schema.freeze(raw)


def _coordinates(value, key: Key) -> tuple[int, ...]:
    items = checks.sequence(value, key)
    return tuple(checks.integer(item, (*key, i), minimum=0) for i, item in enumerate(items))


_SECTION_CHECKS = {
    ("stopping", "max_steps"): lambda v, k: checks.optional(
        v, k, checks.integer, minimum=1, maximum=schema.MAX_STEPS
    ),
    ("stopping", "tol"): lambda v, k: checks.optional(v, k, checks.number, positive=True),
    ("init", "scale"): lambda v, k: checks.number(v, k, positive=True),
    ("init", "radius"): lambda v, k: checks.optional(v, k, checks.number, positive=True),
    ("reference", "num_draws"): lambda v, k: checks.integer(v, k, minimum=10),
    ("reference", "num_warmup"): lambda v, k: checks.integer(v, k, minimum=0),
    ("diagnostics", "num_samples"): lambda v, k: checks.integer(v, k, minimum=10),
    ("plots", "coordinates"): lambda v, k: checks.optional(v, k, _coordinates),
}


def _section(raw, key: Key, cls):
    if raw is None:
        return cls()
    raw = checks.mapping(raw, key)
    checks.check_keys(raw, cls._fields, key)
    return cls(
        **{field: _SECTION_CHECKS[(key[0], field)](raw[field], (*key, field)) for field in raw}
    )

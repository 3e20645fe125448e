"""The schema of an experiment config (``configs/*.yaml``), as immutable NamedTuples.

A config names one target, the directions of KL to fit it with, and everything
that decides the numbers (optimizer, stopping, draws, seeds, precision). Every
key except ``name`` and ``target`` has a default. A complete example::

    name: bimodal                  # the results go to <output>/<name>/
    target:                        # a built-in target (vi.experiments.registry.TARGETS) ...
      name: bimodal_2d
      params: {separation: 6.0}    # keyword arguments of its constructor
      label: bimodal 2-D           # optional: how tables and plots name it
    # ... or a NumPyro model, by registry name (registry.MODELS) or import path:
    # target:
    #   model: eight_schools       # or: experiments.models:eight_schools_noncentred
    #   data: ../data/eight_schools.json   # .npz or .json, relative to this file
    #   args: [sigma]              # data arrays passed positionally
    #   kwargs: {y: y}             # model keyword -> data array
    family: mean_field_gaussian    # or full_rank_gaussian, or {name: low_rank_gaussian, rank: 5}
    objectives:
      - {name: reverse_kl, method: fixed_draws}     # or method: stochastic (the default and
                                                    # the only one for the other families)
      - {name: forward_kl, estimator: exact}        # exact | draws | snis | nuts
      - {name: renyi, alpha: 0.5, num_particles: 8}  # the Rényi bound; below 0 also
                                                     # estimator: exact | draws | nuts
      - {name: importance_weighted, num_particles: 8, doubly_reparameterised: true}
    optimizer:                     # any optax optimizer taking a learning_rate;
      name: adam                   # used by stochastic reverse KL and by forward KL
      learning_rate: 0.01
      schedule: {name: cosine_decay_schedule, init_value: 0.01, decay_steps: 2000}
    stopping: {max_steps: 2000, tol: null}          # null: the library's default
    init: {scale: 0.1, radius: null}                # radius: jitter q's start per seed
    num_samples: null              # draws of q per step (or fixed draws)
    seeds: {start: 0, stop: 8}     # or a list: [0, 1, 2]
    precision: float32             # or float64
    output: results                # relative to the working directory
    devices: auto                  # auto (every GPU, else every CPU core) | cpu | gpu
    max_runs: 100000               # a sweep of more runs is refused before it is expanded
    reference: {num_draws: 2000, num_warmup: 500}   # exact or NUTS draws of the target
    diagnostics: {num_samples: 4096}
    plots: {coordinates: null}     # coordinates for marginal plots (D > 2); null: first 4
    sweep:                         # a grid: the cartesian product of these lists
      target.params.separation: [2.0, 4.0, 8.0]
      optimizer.learning_rate: [0.01, 0.003]

A sweep key is a dotted path into the config (list entries by index, e.g.
``objectives.0.method``); its values may be whole mappings, so
``sweep: {target: [{name: banana}, {name: funnel}]}`` runs one study over
several targets. Every sweep point is validated before anything runs.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

EMPTY: Mapping[str, Any] = MappingProxyType({})

FAMILIES = ("mean_field_gaussian", "full_rank_gaussian", "low_rank_gaussian")
OBJECTIVES = ("reverse_kl", "forward_kl", "renyi", "importance_weighted")
REVERSE_METHODS = ("fixed_draws", "stochastic")
FORWARD_ESTIMATORS = ("exact", "draws", "snis", "nuts")
COVERING_ESTIMATORS = ("exact", "draws", "nuts")
"""Where renyi with alpha < 0 takes the target's draws (self-normalised draws of q fail)."""
PRECISIONS = ("float32", "float64")
MAX_STEPS = 10_000_000
"""The most steps a config's fit may take: the trace of every fit holds a value per step."""

MAX_RUNS = 100_000
"""The most runs a config may plan unless it raises ``max_runs``: checked before the seeds
or the sweep grid are expanded, so that a typo cannot take the machine's memory."""
DEVICES = ("auto", "cpu", "gpu")
"""Where a run's fits go: ``auto`` the default backend's local devices (every GPU, else one
CPU device per core), ``cpu`` or ``gpu`` that platform's (``vifit run --devices``)."""


class TargetSpec(NamedTuple):
    """What to fit: a built-in target (``name``) or a NumPyro model (``model``), not both.

    Attributes:
      name: a key of ``registry.TARGETS``.
      params: keyword arguments of that constructor (numbers and nested lists).
      model: a key of ``registry.MODELS`` or an import path ``package.module:function``.
      data: absolute path of the model's data file (.npz or .json), resolved from
        the config file's directory.
      args: names of data arrays passed to the model positionally.
      kwargs: model keyword -> name of the data array passed as it.
      label: how tables and figures name the target; defaults to ``name`` or ``model``.
    """

    name: str | None = None
    params: Mapping[str, Any] = EMPTY
    model: str | None = None
    data: str | None = None
    args: tuple[str, ...] = ()
    kwargs: Mapping[str, str] = EMPTY
    label: str | None = None


class FamilySpec(NamedTuple):
    """A family with options (``low_rank_gaussian`` and its rank); the others are written
    as their name alone.

    Attributes:
      name: ``low_rank_gaussian``.
      rank: r, the columns of the low-rank factor.
    """

    name: str
    rank: int


class ObjectiveSpec(NamedTuple):
    """One direction of KL and how it is optimised.

    Attributes:
      name: ``reverse_kl`` (maximise the ELBO), ``forward_kl``, ``renyi`` (the Rényi bound,
        ``vi.Renyi``) or ``importance_weighted`` (``vi.ImportanceWeighted``); the last two
        are fitted by the stochastic method with the config's optimizer.
      method: reverse KL only: ``fixed_draws`` (L-BFGS on fixed draws, the
        default) or ``stochastic`` (fresh draws and the optax ``optimizer``).
      estimator: forward KL only: ``exact`` (fresh exact draws of the target
        every step), ``draws`` (a fixed pool of ``reference.num_draws`` exact
        draws), ``snis`` (self-normalised importance sampling from q, the
        unnormalised density alone) or ``nuts`` (a pool of NUTS draws); also renyi with
        ``alpha < 0``, which fits from the target's draws: ``exact`` (the default for
        built-in targets), ``draws`` or ``nuts``.
      alpha: renyi only: the order, any finite number (below 0 an upper bound, minimised).
      num_particles: renyi and importance_weighted: draws inside one estimate of the
        bound (default 8); ``num_samples`` must be a multiple of it.
      doubly_reparameterised: importance_weighted only: the DReG gradient.
      label: how tables and legends name it.
    """

    name: str
    method: str | None = None
    estimator: str | None = None
    alpha: float | None = None
    num_particles: int | None = None
    doubly_reparameterised: bool | None = None
    label: str | None = None


class ScheduleSpec(NamedTuple):
    """An optax schedule by name (``optax.schedules``) and its keyword arguments."""

    name: str
    args: Mapping[str, Any] = EMPTY


class OptimizerSpec(NamedTuple):
    """An optax optimizer by name, with a constant ``learning_rate`` or a ``schedule``.

    Attributes:
      name: an optax function that takes a ``learning_rate`` (adam, sgd, ...).
      learning_rate: the constant learning rate; None when ``schedule`` is given.
      schedule: the learning-rate schedule, or None.
      args: the optimizer's other keyword arguments (``b1``, ``momentum``, ...).
    """

    name: str = "adam"
    learning_rate: float | None = 0.01
    schedule: ScheduleSpec | None = None
    args: Mapping[str, Any] = EMPTY


class StoppingSpec(NamedTuple):
    """When a fit stops; None leaves the choice to ``vi.fit``.

    Attributes:
      max_steps: the most optimisation steps.
      tol: gradient tolerance of fixed-draw fits (ignored by the others).
    """

    max_steps: int | None = None
    tol: float | None = None


class InitSpec(NamedTuple):
    """Where q starts.

    Attributes:
      scale: q's initial standard deviation in every coordinate.
      radius: when given, q's initial mean is the target's init position plus
        uniform noise in (-radius, radius) drawn from the run's key, so that
        seeds start in different places (and may find different modes).
    """

    scale: float = 0.1
    radius: float | None = None


class ReferenceSpec(NamedTuple):
    """Draws of the target: exact when it has a sampler, else from NUTS.

    Attributes:
      num_draws: how many (forward KL ``draws``/``nuts``, marginal plots, diagnostics).
      num_warmup: NUTS warm-up steps.
    """

    num_draws: int = 2000
    num_warmup: int = 500


class DiagnosticsSpec(NamedTuple):
    """Attributes:
    num_samples: draws of q (and of the target) for the diagnostics of each fit.
    """

    num_samples: int = 4096


class PlotsSpec(NamedTuple):
    """Attributes:
    coordinates: indices of the coordinates whose marginals are plotted when
      D > 2; None plots the first four.
    """

    coordinates: tuple[int, ...] | None = None


class Config(NamedTuple):
    """A validated experiment config; see the module docstring for the YAML form."""

    name: str
    target: TargetSpec
    family: str | FamilySpec = "mean_field_gaussian"
    objectives: tuple[ObjectiveSpec, ...] = (ObjectiveSpec("reverse_kl", "fixed_draws"),)
    optimizer: OptimizerSpec = OptimizerSpec()
    stopping: StoppingSpec = StoppingSpec()
    init: InitSpec = InitSpec()
    num_samples: int | None = None
    seeds: tuple[int, ...] = (0,)
    precision: str = "float32"
    output: str = "results"
    devices: str = "auto"
    max_runs: int = MAX_RUNS
    reference: ReferenceSpec = ReferenceSpec()
    diagnostics: DiagnosticsSpec = DiagnosticsSpec()
    plots: PlotsSpec = PlotsSpec()
    sweep: Mapping[str, tuple] = EMPTY


SECTIONS = {
    "stopping": StoppingSpec,
    "init": InitSpec,
    "reference": ReferenceSpec,
    "diagnostics": DiagnosticsSpec,
    "plots": PlotsSpec,
}
"""Sections whose keys are exactly their NamedTuple's fields."""


def to_plain(value: Any) -> Any:
    """A config (or any part of it) as plain dicts, lists and scalars, ready for YAML or JSON.

    ``OptimizerSpec.args`` and ``ScheduleSpec.args`` are inlined next to ``name``
    (as in the YAML), and unset optional fields of targets and objectives are left
    out, so that ``config.parse_config(to_plain(config))`` gives ``config`` back.
    """
    if isinstance(value, OptimizerSpec | ScheduleSpec):
        plain = {key: to_plain(item) for key, item in value._asdict().items() if key != "args"}
        plain.update((key, to_plain(item)) for key, item in value.args.items())
        return {key: item for key, item in plain.items() if item is not None or key == "name"}
    if isinstance(value, TargetSpec | ObjectiveSpec):
        return {
            key: to_plain(item)
            for key, item in value._asdict().items()
            if item not in (None, (), EMPTY, {})
        }
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {key: to_plain(item) for key, item in value._asdict().items()}
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    return value


def freeze(value: Any) -> Any:
    """Makes parsed YAML immutable: mappings become read-only, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value

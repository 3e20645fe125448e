"""Names a config may use: built-in targets, NumPyro models, optax optimizers and schedules.

Configs are data: nothing in one is evaluated as code. A model is a registered name
(``MODELS``, imported from this checkout's ``experiments/models.py``, never from the working
directory), or a ``package.module:function`` import path, which is code: it is imported
only when the user says so (``vifit run --trust-code``), never by ``vifit validate``.
"""

import difflib
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import optax

from vi.experiments.schema import OptimizerSpec, TargetSpec
from vi.targets import Target, from_numpyro, mixture, shapes

TARGETS: dict[str, Callable] = {
    "gaussian_mixture": mixture.gaussian_mixture,
    "bimodal_2d": mixture.bimodal_2d,
    "unequal_bimodal_2d": mixture.unequal_bimodal_2d,
    "mixture_10d": mixture.mixture_10d,
    "banana": shapes.banana,
    "funnel": shapes.funnel,
    "ring": shapes.ring,
}
"""Built-in targets: name -> constructor returning a ``vi.Target``."""

MODELS: dict[str, str] = {
    "eight_schools": "experiments.models:eight_schools_noncentred",
    "eight_schools_centred": "experiments.models:hierarchical_funnel",
    "logistic_regression": "experiments.models:logistic_regression",
}
"""Named NumPyro models: name -> import path. They live in the repository's
``experiments/models.py``, imported from the root of the checkout ``vi`` runs from."""

CHECKOUT = Path(__file__).resolve().parents[2]
"""The root of the checkout this ``vi`` is imported from (holding ``experiments/``)."""

DATA_SUFFIXES = (".npz", ".json")
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NOT_OPTIMIZERS = ("scale_by_", "inject_")
_NOT_SCHEDULES = ("inject_hyperparams", "inject_stateful_hyperparams", "join_schedules")


class RegistryError(ValueError):
    """A name or path that does not resolve; the message says what is allowed."""


def did_you_mean(name: str, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(kind: str, name: str, choices) -> RegistryError:
    """The error for a name that is not one of ``choices``, listing them."""
    choices = sorted(choices)
    return RegistryError(
        f"unknown {kind} {name!r}{did_you_mean(name, choices)} (allowed: {', '.join(choices)})"
    )


def keyword_names(fn: Callable) -> tuple[list[str], list[str]]:
    """The keyword-passable parameters of ``fn``: (all of them, the required ones)."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


def target_constructor(name: str) -> Callable:
    """The built-in target constructor called ``name``."""
    if name not in TARGETS:
        raise unknown("target", name, TARGETS)
    return TARGETS[name]


def is_import_path(name_or_path: str) -> bool:
    """Whether a config's ``model`` names code to import rather than a registered model."""
    return name_or_path not in MODELS and ":" in name_or_path


def check_import_path(path: str) -> None:
    """Checks the form of ``package.module:function`` without importing anything."""
    if not _IMPORT_PATH.match(path):
        raise RegistryError(f"{path!r} is not an import path of the form 'package.module:function'")


def model_function(name_or_path: str) -> Callable:
    """A NumPyro model from a ``MODELS`` name or a ``package.module:function`` path (which
    imports it: the caller has the user's word that this is wanted)."""
    if name_or_path in MODELS:
        model = import_path(MODELS[name_or_path], search=str(CHECKOUT))
        where = Path(inspect.getfile(model)).resolve()
        if not where.is_relative_to(CHECKOUT):  # another 'experiments' package came first
            raise RegistryError(
                f"registered model {name_or_path!r} resolved to {where}, outside this "
                f"checkout ({CHECKOUT}): a package named 'experiments' on the path shadows it"
            )
        return model
    if ":" not in name_or_path:
        message = str(unknown("model", name_or_path, MODELS))
        raise RegistryError(f"{message}; or give an import path 'package.module:function'")
    return import_path(name_or_path)


def import_path(path: str, search: str | None = None) -> Callable:
    """Imports ``package.module:attribute`` and returns the attribute.

    ``search`` (default: the working directory, as ``python -m`` does) is searched too,
    so models kept in a checkout (``experiments.models:...``) import from its root.
    """
    check_import_path(path)
    module_name, attribute = path.split(":")
    cwd = os.getcwd() if search is None else search
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise RegistryError(f"cannot import {module_name!r} from {path!r}: {error}") from None
    except Exception as error:
        raise RegistryError(
            f"importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            public = [name for name in dir(value) if not name.startswith("_")]
            raise RegistryError(
                f"{module_name!r} has no attribute {attribute!r}{did_you_mean(part, public)}"
            )
        value = getattr(value, part)
    if not callable(value):
        raise RegistryError(f"{path!r} is not callable")
    return value


def load_data(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads named arrays from an ``.npz`` file or a ``.json`` object of (nested) number lists."""
    path = Path(path)
    if path.suffix not in DATA_SUFFIXES:
        raise RegistryError(f"data file {str(path)!r} must end in .npz or .json")
    if not path.is_file():
        raise RegistryError(f"data file {str(path)!r} does not exist")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as error:
            raise RegistryError(f"cannot read {str(path)!r} as .npz: {error}") from None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RegistryError(f"cannot read {str(path)!r} as JSON: {error}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{str(path)!r} must hold a JSON object of named arrays")
    arrays = {}
    for name, value in raw.items():
        try:
            arrays[name] = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise RegistryError(
                f"{str(path)!r}: {name!r} is not a number or a list of numbers"
            ) from None
    return arrays


def optimizer_names() -> list[str]:
    """optax functions that build an optimizer from a ``learning_rate``."""
    names = []
    for name in dir(optax):
        fn = getattr(optax, name)
        if name.startswith(("_", *_NOT_OPTIMIZERS)) or not inspect.isfunction(fn):
            continue
        if "learning_rate" in inspect.signature(fn).parameters:
            names.append(name)
    return names


def schedule_names() -> list[str]:
    """optax's learning-rate schedules (``optax.schedules``)."""
    return [
        name
        for name in dir(optax.schedules)
        if not name.startswith("_")
        and name not in _NOT_SCHEDULES
        and inspect.isfunction(getattr(optax.schedules, name))
    ]


def optimizer_function(name: str) -> Callable:
    """The optax optimizer called ``name``."""
    names = optimizer_names()
    if name not in names:
        raise unknown("optimizer", name, names)
    return getattr(optax, name)


def schedule_function(name: str) -> Callable:
    """The optax schedule called ``name``."""
    names = schedule_names()
    if name not in names:
        raise unknown("schedule", name, names)
    return getattr(optax.schedules, name)


def build_target(spec: TargetSpec) -> Target:
    """Constructs the target a validated ``TargetSpec`` names, in the current precision."""
    import jax.numpy as jnp

    if spec.name is not None:
        return target_constructor(spec.name)(**_thaw(spec.params))
    model = model_function(spec.model)
    data = load_data(spec.data) if spec.data is not None else {}
    args = [jnp.asarray(data[name]) for name in spec.args]
    kwargs = {key: jnp.asarray(data[name]) for key, name in spec.kwargs.items()}
    return from_numpyro(model, *args, **kwargs)


def build_optimizer(spec: OptimizerSpec) -> optax.GradientTransformation:
    """The optax optimizer a validated ``OptimizerSpec`` names."""
    learning_rate = spec.learning_rate
    if spec.schedule is not None:
        learning_rate = schedule_function(spec.schedule.name)(**_thaw(spec.schedule.args))
    return optimizer_function(spec.name)(learning_rate=learning_rate, **_thaw(spec.args))


def _thaw(value):
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value

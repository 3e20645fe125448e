"""Loading experiment configs: YAML, ``--set`` overrides, sweep expansion, located errors.

The schema is in ``vi.experiments.schema`` and its checks in
``vi.experiments.validation``. Everything is checked before anything is
computed: unknown keys (with a did-you-mean), types, ranges, target/model/
optimizer names, data files and import paths. Errors are ``ConfigError``s
naming the file and line (or the ``--set`` override) and the key path. This is
the only module that imports ``yaml``.
"""

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from vi.experiments import checks, schema, sweep
from vi.experiments.checks import ConfigError, Key
from vi.experiments.schema import Config, TargetSpec
from vi.experiments.validation import parse_config


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


MAX_NODES = 100_000
"""Values a config may hold once its aliases are expanded: far above any real config, far
below what an alias bomb (a few lines that expand to billions) would take to build."""

MAX_DEPTH = 40
"""Levels of nesting a config may have."""


def compose_yaml(text: str, source: str) -> yaml.Node | None:
    """The YAML node tree of ``text``, checked before anything is built from it: at most
    ``MAX_NODES`` values with aliases expanded, ``MAX_DEPTH`` levels, no key twice in a
    mapping. Errors are ``ConfigError``s at their file and line."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise _malformed(error, source) from None
    except RecursionError:
        raise ConfigError(
            f"the YAML nests deeper than this reader allows (a config has {MAX_DEPTH} levels "
            "at most)",
            where=source,
        ) from None
    if root is not None:
        _check_tree(root, source)
    return root


def _check_tree(root: yaml.Node, source: str) -> None:
    count = 0
    stack = [(root, 1)]
    while stack:  # every visit counts: an alias is walked again where it is used
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(
                f"the YAML holds more than {MAX_NODES:,} values once its aliases (*name) are "
                "expanded; a config needs far fewer (an alias bomb?)",
                where=f"{source}:{node.start_mark.line + 1}",
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"the YAML nests more than {MAX_DEPTH} levels deep",
                where=f"{source}:{node.start_mark.line + 1}",
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        raise ConfigError(
                            f"duplicate key {key_node.value!r}: first on line "
                            f"{seen[key_node.value]}, again on line {line} (YAML would keep "
                            "the last one silently)",
                            where=f"{source}:{line}",
                        )
                    seen[key_node.value] = line
                stack.append((key_node, depth + 1))
                stack.append((value_node, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


def _malformed(error: yaml.YAMLError, source: str) -> ConfigError:
    """A YAML syntax or construction error as a ``ConfigError`` at its file and line."""
    mark = getattr(error, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return ConfigError(f"malformed YAML: {problem}", where=where)


def parse_yaml(text: str, source: str) -> Any:
    """Parses YAML safely within the limits of ``compose_yaml``; an error becomes a
    ``ConfigError`` at its file and line."""
    return _construct(compose_yaml(text, source), source)


def _construct(root: yaml.Node | None, source: str) -> Any:
    if root is None:
        return None
    try:
        return _Loader("").construct_document(root)
    except yaml.YAMLError as error:
        raise _malformed(error, source) from None


def key_lines(root: yaml.Node | None) -> dict[Key, int]:
    """The 1-based line of every key path in a composed YAML document (``compose_yaml``),
    for error messages; an alias's keys are given the line of the alias."""
    lines: dict[Key, int] = {}

    def walk(node, key, depth):
        lines.setdefault(key, node.start_mark.line + 1)
        if depth > 8:  # error messages name keys near the top; aliases stop here too
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*key, key_node.value)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, value_node in enumerate(node.value[:1000]):
                walk(value_node, (*key, index), depth + 1)

    if root is not None:
        walk(root, (), 0)
    return lines


def dump_config(config: Config, *, output: bool = True) -> str:
    """The resolved config as YAML, keys in schema order (deterministic).

    With ``output=False``, for results that promise no path of this machine: without
    ``output`` (where the results went), and with a model's data file relative to the
    working directory when it lies under it, else by its name alone (the runs are named
    by the file's content, not its path).
    """
    plain = schema.to_plain(config)
    if not output:
        plain.pop("output")
        if config.target.data is not None:
            data, here = Path(config.target.data), Path.cwd()
            plain["target"]["data"] = str(
                data.relative_to(here) if data.is_relative_to(here) else data.name
            )
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=None)


class SweepPoint(NamedTuple):
    """One point of a config's sweep grid.

    Attributes:
      label: its name in tables and figures (the target, then the swept values).
      assignments: the ``(sweep key, value)`` pairs that make this point.
      config: the config at this point, with an empty ``sweep``.
    """

    label: str
    assignments: tuple[tuple[str, Any], ...]
    config: Config


class Experiment(NamedTuple):
    """A validated config file with its overrides applied and its sweep expanded.

    Attributes:
      config: the resolved config (sweep kept, as written to ``config.yaml``).
      points: every sweep point, each validated (one point when there is no sweep).
      source: the config file it was read from.
    """

    config: Config
    points: tuple[SweepPoint, ...]
    source: str


def load_experiment(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    output: str | None = None,
    code: str = "refuse",
) -> Experiment:
    """Reads, overrides, validates and expands a config file; computes nothing.

    Args:
      path: the YAML config file.
      overrides: ``KEY=VALUE`` strings (``optimizer.learning_rate=0.003``); the
        key is a dotted path, the value is read as YAML.
      output: replaces the config's ``output`` directory when given.
      code: a model given as an import path is ``"refuse"``d (the default), its form
        ``"check"``ed without importing it, or ``"import"``ed (``parse_config``).

    Returns:
      The ``Experiment``.

    Raises:
      ConfigError: naming the file and line or the override, the key path and
        what is allowed there.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(f"cannot read the config file: {reason}", where=source) from None
    root = compose_yaml(text, source)  # once: for the values and for their lines
    raw = _construct(root, source)
    if raw is None:
        raise ConfigError("the config file is empty", where=source)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping of config keys, got {checks.describe(raw)}", where=source
        )
    lines = key_lines(root)
    applied: list[tuple[Key, str]] = []
    for override in overrides:
        try:
            key, value = parse_override(override)
            raw = sweep.set_key(raw, key, value)
        except ConfigError as error:
            error.where = error.where or f"--set {override}"
            raise
        applied.append((key, f"--set {override}"))
    if output is not None:
        raw = sweep.set_key(raw, ("output",), str(output))
        applied.append((("output",), "--out"))
    try:
        config = parse_config(raw, base_dir=path.parent, code=code)
        points = _expand(config, raw, path.parent, code)
    except ConfigError as error:
        raise _locate(error, source, lines, applied) from None
    return Experiment(config, points, source)


def parse_override(text: str) -> tuple[Key, Any]:
    """Splits ``KEY=VALUE`` into a key path and a value read as YAML.

    Examples:
      >>> parse_override("optimizer.learning_rate=3e-3")
      (('optimizer', 'learning_rate'), 0.003)
      >>> parse_override("seeds=[0, 1]")
      (('seeds',), [0, 1])
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("expected KEY=VALUE, e.g. optimizer.learning_rate=0.003")
    return sweep.split_key(key.strip()), parse_yaml(value, f"--set {text}")


def target_label(spec: TargetSpec) -> str:
    """How tables and figures name a target: its label, else its name or model."""
    return spec.label or spec.name or spec.model


def _expand(config: Config, raw: dict, base_dir: Path, code: str) -> tuple[SweepPoint, ...]:
    if not config.sweep:
        return (SweepPoint(target_label(config.target), (), config),)
    base = {key: value for key, value in raw.items() if key != "sweep"}
    points, labels = [], set()
    for assignments in sweep.grid(raw["sweep"]):
        point_raw = base
        for sweep_key, value in assignments:
            point_raw = sweep.set_key(point_raw, sweep.split_key(sweep_key), value)
        try:
            point = parse_config(point_raw, base_dir=base_dir, code=code)
        except ConfigError as error:
            culprit = next(
                (
                    (sweep_key, value)
                    for sweep_key, value in assignments
                    if _overlap(sweep.split_key(sweep_key), error.key)
                ),
                assignments[0],
            )
            raise ConfigError(
                f"at {culprit[0]}={sweep.value_label(culprit[1])}: "
                f"{checks.key_text(error.key) or 'config'}: {error.message}",
                ("sweep", culprit[0]),
            ) from None
        label = sweep.point_label(target_label(point.target), assignments)
        if label in labels:
            label = f"{label} #{len(points)}"
        labels.add(label)
        points.append(SweepPoint(label, schema.freeze(assignments), point))
    return tuple(points)


def _overlap(a: Key, b: Key) -> bool:
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def _locate(error: ConfigError, source: str, lines: dict, applied) -> ConfigError:
    if error.where:
        return error
    for key, origin in reversed(applied):
        if _overlap(key, error.key):
            error.where = origin
            return error
    for n in range(len(error.key), -1, -1):
        if error.key[:n] in lines:
            error.where = f"{source}:{lines[error.key[:n]]}"
            return error
    error.where = source
    return error

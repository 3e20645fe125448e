"""Dotted key paths into a config mapping, and the grid of a ``sweep``."""

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from vi.experiments.checks import ConfigError, Key


def split_key(text: str) -> Key:
    """``"objectives.0.method"`` -> ``("objectives", 0, "method")``; a sweep entry stays whole.

    ``sweep.<path>`` names one entry of the ``sweep`` mapping, whose keys are
    themselves dotted paths: ``("sweep", "<path>")``.
    """
    parts = text.split(".")
    if any(not part for part in parts):
        raise ConfigError(f"{text!r} is not a dotted key path like optimizer.learning_rate")
    if parts[0] == "sweep" and len(parts) > 1:
        return ("sweep", ".".join(parts[1:]))
    return tuple(int(part) if part.isdigit() else part for part in parts)


def set_key(raw: Mapping, key: Key, value: Any) -> dict:
    """A copy of the config mapping ``raw`` with ``value`` at ``key``, creating mappings on the way.

    Raises:
      ConfigError: when the path runs through a value that is not a mapping or a
        list, or indexes a list out of range.
    """
    root = copy.deepcopy(dict(raw))
    node = root
    for depth, part in enumerate(key):
        last = depth == len(key) - 1
        where = key[: depth + 1]
        if isinstance(node, dict):
            if last:
                node[part] = copy.deepcopy(value)
            else:
                node = node.setdefault(part, {})
        elif isinstance(node, list):
            if not isinstance(part, int) or not -len(node) <= part < len(node):
                raise ConfigError(
                    f"cannot index a list of {len(node)} entries with {part!r}", where
                )
            if last:
                node[part] = copy.deepcopy(value)
            else:
                node = node[part]
        else:
            raise ConfigError(f"cannot set a key inside {node!r}", key[:depth])
    return root


def grid(sweep: Mapping[str, tuple]) -> list[tuple[tuple[str, Any], ...]]:
    """The cartesian product of a sweep: one tuple of ``(key, value)`` per point, in order.

    Examples:
      >>> grid({"a": (1, 2), "b.c": ("x",)})
      [(('a', 1), ('b.c', 'x')), (('a', 2), ('b.c', 'x'))]
      >>> grid({})
      [()]
    """
    keys = list(sweep)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*sweep.values())]


def value_label(value: Any) -> str:
    """How a swept value is named in labels: a mapping by its label, name or model."""
    if isinstance(value, Mapping):
        for field in ("label", "name", "model"):
            if isinstance(value.get(field), str):
                return value[field]
        return ", ".join(f"{key}={value_label(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_label(item) for item in value) + "]"
    return str(value)


def point_label(target_label: str, assignments: tuple[tuple[str, Any], ...]) -> str:
    """The name of one sweep point: its target, then the other swept values.

    Examples:
      >>> point_label("banana", (("optimizer.learning_rate", 0.01),))
      'banana, learning_rate=0.01'
    """
    rest = [
        f"{split_key(key)[-1]}={value_label(value)}"
        for key, value in assignments
        if key != "target"
    ]
    return ", ".join([target_label, *rest])

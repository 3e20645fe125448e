"""Type and range checks of config values; each failure is a ``ConfigError`` at a key path."""

import math
from collections.abc import Mapping, Sequence

from vi.experiments import registry

Key = tuple[str | int, ...]


class ConfigError(ValueError):
    """An invalid config: ``where`` (file:line or --set), ``key`` (a path) and what is wrong."""

    def __init__(self, message: str, key: Key = (), where: str | None = None):
        super().__init__(message)
        self.message, self.key, self.where = message, tuple(key), where

    def __str__(self) -> str:
        parts = [self.where] if self.where else []
        parts += [key_text(self.key)] if self.key else []
        return ": ".join([*parts, self.message])


def key_text(key: Key) -> str:
    """A key path as written in configs and ``--set``: ``objectives.0.method``."""
    return ".".join(str(part) for part in key)


def registered(fn, *args, key: Key):
    """Calls a registry lookup, turning its ``RegistryError`` into a ``ConfigError`` at ``key``."""
    try:
        return fn(*args)
    except registry.RegistryError as error:
        raise ConfigError(str(error), key) from None


def check_keys(raw: Mapping, allowed: Sequence[str], key: Key, *, required=()) -> None:
    """Rejects keys outside ``allowed`` (with a did-you-mean) and missing ``required`` ones."""
    for name in raw:
        if name not in allowed:
            raise ConfigError(
                f"unknown key {name!r}{registry.did_you_mean(name, allowed)} "
                f"(allowed: {', '.join(allowed)})",
                (*key, name),
            )
    for name in required:
        if name not in raw:
            raise ConfigError(f"missing required key {name!r}", key)


def describe(value) -> str:
    """How an error message names a value read from YAML: ``the string 'abc'``, ``a list``."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "null"
    kinds = {str: "the string", bool: "the boolean", int: "the number", float: "the number"}
    kind = next(
        (text for cls, text in kinds.items() if isinstance(value, cls)), type(value).__name__
    )
    return f"{kind} {value!r}"


def mapping(value, key: Key) -> Mapping:
    """``value`` if it is a mapping with string keys."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {describe(value)}", key)
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(f"keys must be strings, got {name!r}", key)
    return value


def sequence(value, key: Key) -> list:
    """``value`` as a list, if it is one."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"expected a list, got {describe(value)}", key)
    return list(value)


def string(value, key: Key, *, pattern=None, what="a string") -> str:
    """``value`` if it is a non-empty string (matching ``pattern``, when given)."""
    if (
        not isinstance(value, str)
        or not value
        or (pattern is not None and not pattern.match(value))
    ):
        raise ConfigError(f"expected {what}, got {describe(value)}", key)
    return value


def choice(value, key: Key, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"{value!r} is not allowed{registry.did_you_mean(value, choices)} "
            f"(allowed: {', '.join(choices)})",
            key,
        )
    return value


def integer(value, key: Key, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an integer (not a boolean) of at least ``minimum`` and at most
    ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {describe(value)}", key)
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", key)
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be at most {maximum:,}, got {value:,}", key)
    return value


def number(value, key: Key, *, positive: bool = False) -> float:
    """``value`` as a float, if it is a finite number (and positive, when asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {describe(value)}", key)
    if positive and value <= 0:
        raise ConfigError(f"must be positive, got {value}", key)
    return float(value)


def numeric_tree(value, key: Key, *, mappings: bool = False) -> None:
    """Checks that ``value`` is a number or nested lists (and mappings, if allowed) of numbers."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            numeric_tree(item, (*key, index), mappings=mappings)
    elif mappings and isinstance(value, Mapping):
        for name, item in value.items():
            numeric_tree(item, (*key, name), mappings=mappings)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"expected a number or a list of numbers, got {describe(value)}", key)


def optional(value, key: Key, check, **options):
    """None for None, else ``check(value, key, **options)``."""
    return None if value is None else check(value, key, **options)


def arguments(fn, kwargs: Mapping, key: Key, what: str, *, given=()) -> None:
    """Checks ``kwargs`` against ``fn``'s keyword parameters: none unknown, none required missing.

    Args:
      fn: the function the keywords go to.
      kwargs: the keywords from the config.
      key: where they sit in the config.
      what: how messages name ``fn``.
      given: parameters supplied elsewhere (not required in ``kwargs``).
    """
    names, required = registry.keyword_names(fn)
    for name in kwargs:
        if name not in names:
            raise ConfigError(
                f"not an argument of {what}{registry.did_you_mean(name, names)} "
                f"(allowed: {', '.join(names)})",
                (*key, name),
            )
    missing = [name for name in required if name not in kwargs and name not in given]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(repr(name) for name in missing)}", key)

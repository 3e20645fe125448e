"""A warning for fits that compile again only because they were handed new objects.

A compiled fit is keyed on its ``Spec``, which holds the target's functions and the
optimizer by identity (JAX cannot compare functions otherwise). A ``lambda`` or an
``optax.adam(...)`` made inside a loop is a new object at every call, so every call
compiles again, at a cost of a second or more. ``warn_if_new_objects`` recognises the
case: a fit whose ``Spec``, with each function replaced by its code and what it closes
over, and whose input shapes equal those of an earlier fit, but whose objects do not.
"""

import collections
import dataclasses
import warnings

import jax
import numpy as np

# (entry point, the Spec as code, input shapes) -> the Specs compiled for it, most recent
# last. Bounded: each Spec keeps its functions, and what they close over, alive.
_SEEN: collections.OrderedDict = collections.OrderedDict()
_MAX_KEYS = 64
_MAX_SPECS = 8


def warn_if_new_objects(entry, spec, inputs) -> None:
    """Warns when ``spec`` compiles again only for new objects with the same code.

    Args:
      entry: what is compiled, with its own static arguments (hashable).
      spec: the fit's ``vi.fitting.spec.Spec``.
      inputs: the compiled program's array arguments (any pytree).
    """
    leaves, treedef = jax.tree.flatten(inputs)
    shapes = tuple((np.shape(x), getattr(x, "dtype", None)) for x in leaves)
    static = (_code_tree(spec.static.treedef), _code(spec.static.leaves))
    as_code = spec._replace(static=static, optimizer=_code(spec.optimizer))
    key = (entry, as_code, treedef, shapes)
    specs = _SEEN.pop(key, [])
    _SEEN[key] = specs
    while len(_SEEN) > _MAX_KEYS:
        _SEEN.popitem(last=False)
    if spec in specs:
        return  # compiled already
    if specs:
        _warn(specs[-1], spec)
    specs.append(spec)
    del specs[:-_MAX_SPECS]


def forget() -> None:
    """Forgets every fit seen (for tests that must not depend on each other)."""
    _SEEN.clear()


def _warn(last, spec) -> None:
    new_optimizer = last.optimizer != spec.optimizer
    if new_optimizer and last.static != spec.static:
        what = "the optimizer and the target's functions are new objects"
    elif new_optimizer:
        what = "the optimizer is a new object"
    else:
        what = "the target's functions (its log density or sampler) are new objects"
    advice = "Create them once, outside the loop."
    if new_optimizer:
        advice += (
            " To sweep an optimizer's settings, use "
            "vi.fit_batch(..., optimizer=optax.adam, hyperparameters=...)."
        )
    warnings.warn(
        f"this fit compiles again because {what} with the same code as in an earlier fit "
        "with the same shapes (vi reuses a compiled fit only for the same objects). " + advice,
        stacklevel=4,  # the user's call of fit or fit_batch
    )


def _code_tree(treedef):
    """A pytree structure with the functions in its nodes' data (a ``Partial``'s function)
    replaced as ``_code`` replaces them."""
    data = treedef.node_data()
    if data is None:  # a leaf
        return None
    node_type, aux = data
    return node_type, _code(aux), tuple(_code_tree(c) for c in treedef.children())


def _code(x, depth: int = 4):
    """``x`` with each function in it (in tuples, NamedTuples, closures, default arguments,
    the globals it reads, ``depth`` levels down) replaced by its code and what it uses:
    equal for two objects made by the same code from the same values."""
    if isinstance(x, tuple | list):
        return type(x), tuple(_code(v, depth) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type) and depth:
        fields = tuple(getattr(x, f.name) for f in dataclasses.fields(x))
        return type(x), _code(fields, depth - 1)
    code = getattr(x, "__code__", None)
    if code is None or depth == 0:
        return x if _is_hashable(x) else id(x)
    try:
        cells = tuple(_code(c.cell_contents, depth - 1) for c in x.__closure__ or ())
    except ValueError:  # an empty cell
        return x
    defaults = _code(x.__defaults__ or (), depth - 1)
    kwdefaults = _code(tuple(sorted((x.__kwdefaults__ or {}).items())), depth - 1)
    module = getattr(x, "__globals__", {})
    used = tuple((n, _code(module[n], depth - 1)) for n in code.co_names if n in module)
    bound_to = getattr(x, "__self__", None)  # a bound method's instance, by identity
    return code, cells, defaults, kwdefaults, used, None if bound_to is None else id(bound_to)


def _is_hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True

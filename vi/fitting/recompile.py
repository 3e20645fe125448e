"""A warning for fits that compile again only because they were handed new objects.

A compiled fit is keyed on its method and its target's structure, which hold the
optimizer and the target's functions by identity (JAX cannot compare functions otherwise). A ``lambda`` or an
``optax.adam(...)`` made inside a loop is a new object at every call, so every call
compiles again, at a cost of a second or more. ``warn_if_new_objects`` recognises the
case: a fit whose method and structure, with each function replaced by its code and what it closes
over (arrays by their shapes), and whose input shapes equal those of an earlier fit, but whose
objects do not. A ``lambda`` over new data at every call is such a case.

The objects are remembered by hash (functions hash by identity), so the warning keeps no
function, and no data, alive. A function freed and a new one given its address could
pass for the old one and go unwarned: a missed warning, never a wrong fit.
"""

import collections
import dataclasses
import warnings

import jax
import numpy as np

# (entry point and structure as code, input shapes) -> hashes of the static parts compiled
# for it, most recent last. Hashes, not the parts: the program cache (programs.py) alone
# decides how long a user's functions, and the data they close over, stay alive.
_SEEN: collections.OrderedDict = collections.OrderedDict()
_MAX_KEYS = 64
_MAX_SPECS = 8


def warn_if_new_objects(entry, problem, inputs) -> None:
    """Warns when a fit compiles again only for new objects with the same code.

    Args:
      entry: what is compiled, with its static arguments (the method among them).
      problem: the fit's ``vi.fitting.state.Problem`` (its functions are static).
      inputs: the compiled program's other array arguments (any pytree).
    """
    children, (treedef, others) = problem.tree_flatten()
    leaves, in_tree = jax.tree.flatten((children, inputs))
    shapes = tuple((np.shape(x), getattr(x, "dtype", None)) for x in leaves)
    static = hash((entry, _tree(treedef, _hashable), others))  # functions hash by identity
    key = (_code(entry), _tree(treedef, _code), _code(others), in_tree, shapes)
    seen = _SEEN.pop(key, [])
    _SEEN[key] = seen
    while len(_SEEN) > _MAX_KEYS:
        _SEEN.popitem(last=False)
    if static in seen:
        return  # compiled already
    if seen:
        _warn()
    seen.append(static)
    del seen[:-_MAX_SPECS]


def forget() -> None:
    """Forgets every fit seen (for tests that must not depend on each other)."""
    _SEEN.clear()


def _warn() -> None:
    warnings.warn(
        "this fit compiles again because its method (e.g. its optimizer) or the target's "
        "functions (its log density or sampler) are new objects with the same code as in an "
        "earlier fit with the same shapes (vi reuses a compiled fit only for the same "
        "objects). Create them once, outside the loop; to sweep an optimizer's settings, "
        "build it with optax.inject_hyperparams and use vi.fit_batch(..., hyperparameters=...). "
        "A log density that closes over data compiles again for each dataset and keeps it: "
        "pass the data as an argument, vi.from_logdensity(jax.tree_util.Partial(fn, data), "
        "init_position) with fn(data, position), to compile once for every dataset of its "
        "shape.",
        stacklevel=4,  # the user's call of fit or fit_batch
    )


def _hashable(x):
    """``x`` with its lists as tuples; an object that cannot be hashed stands as its type
    (at worst a missed warning)."""
    if isinstance(x, tuple | list):
        return tuple(_hashable(v) for v in x)
    return x if _is_hashable(x) else type(x)


def _tree(treedef, aux_fn):
    """A pytree structure as nested tuples ``(node type, aux_fn(its data), children)``:
    its nodes' data (a ``Partial``'s function) in a form that can be compared or hashed,
    which the structure's own hash leaves out (two ``Partial``s of different functions
    hash alike)."""
    data = treedef.node_data()
    if data is None:  # a leaf
        return None
    node_type, aux = data
    return node_type, aux_fn(aux), tuple(_tree(c, aux_fn) for c in treedef.children())


def _code(x, depth: int = 4):
    """``x`` with each function in it (in tuples, NamedTuples, closures, default arguments,
    the globals it reads, ``depth`` levels down) replaced by its code and what it uses, and
    each array by its shape and dtype: equal for two objects made by the same code from
    values of the same shapes."""
    if isinstance(x, tuple | list):
        return type(x), tuple(_code(v, depth) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type) and depth:
        fields = tuple(getattr(x, f.name) for f in dataclasses.fields(x))
        return type(x), _code(fields, depth - 1)
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # data a function closes over
        return "array", np.shape(x), str(x.dtype)
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

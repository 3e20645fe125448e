"""Many fits as one compiled program: over seeds, datasets and hyperparameters.

``fit_batch`` runs B fits of one method as one program: each member's ``init``, then the
method's ``step`` vmapped over the members, window by window, until every member has
stopped (``vi.fitting.loop``). The batch axis is split over the local devices with
``shard_map`` on a one-axis ``Mesh``: each device runs its share as its own loop, to its
own end, with no communication between devices. On a CPU, call
``vi.set_cpu_devices()`` before JAX starts to have one device per core (``vifit run`` does).
A member that converges stops changing while the rest go on; a member that fails is
flagged and cannot change the others' results.

Across machines, the same program runs under JAX's own distributed runtime: call
``jax.distributed.initialize()`` in every process, then ``fit_batch`` with the keys of this
process's share of the sweep (``vi.fitting.process_share``): each process shards its share
over its local devices, and the results are gathered by the caller (``vi.fitting.gather``).
"""

import collections
import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vi import backend
from vi.families.family import Params
from vi.families.mean_field import MeanFieldParams
from vi.fitting import programs
from vi.fitting.fit import resolve, start
from vi.fitting.interrupts import held_interrupts
from vi.fitting.loop import advance, empty_trace, finish, fit_keys
from vi.fitting.progress import ProgressBar, progress_enabled, report_every, report_progress
from vi.fitting.recompile import warn_if_new_objects
from vi.fitting.result import FitResult, concrete
from vi.fitting.start import check_num_eval_samples, check_rng_key, check_target, initial_params
from vi.fitting.state import NONFINITE, RUNNING, STATUS_NAMES, FitOutput, Problem
from vi.fitting.stochastic import Stochastic
from vi.targets.target import Target, is_array, member


def _program(method, aux, axes, init_radius, num_eval_samples, progress_every, sharded):
    """One shard's fits: ``(rng_keys, children, init_params, hyperparameters) -> FitOutput``."""
    axes = list(axes)  # a tuple to be hashed; a list to match the problem's children

    def init_one(rng_key, init_params, children, hyperparameters):
        keys = fit_keys(rng_key)
        state = start(method, Problem.tree_unflatten(aux, children), init_params, keys, init_radius)
        if hyperparameters is not None:
            state = state._replace(opt_state=optax.tree.set(state.opt_state, **hyperparameters))
        return state._replace(problem=None), keys

    def finish_one(core, keys, trace, children):
        state = core._replace(problem=Problem.tree_unflatten(aux, children))
        return finish(method, state, trace, keys.eval, num_eval_samples)

    def run(rng_keys, children, init_params, hyperparameters):
        hyper_axis = None if hyperparameters is None else 0
        cores, keys = jax.vmap(init_one, in_axes=(0, 0, axes, hyper_axis))(
            rng_keys, init_params, children, hyperparameters
        )
        dtype = init_params.loc.dtype
        trace = empty_trace(method, dtype, (len(rng_keys),))
        on_window = None
        if progress_every is not None:
            shard = jax.lax.axis_index("batch") if sharded else 0
            every = max(1, progress_every // method.window)

            def on_window(cores, count):
                num_running = jnp.sum(cores.status == RUNNING)
                jax.lax.cond(
                    (count % every == 0) | (num_running == 0),
                    lambda: jax.debug.callback(
                        report_progress, count * method.window, num_running, shard
                    ),
                    lambda: None,
                )

        problem = Problem.tree_unflatten(aux, children)
        cores, trace = advance(
            method, cores, problem, keys.step, trace, problem_axes=axes, on_window=on_window
        )
        return jax.vmap(finish_one, in_axes=(0, 0, 0, axes))(cores, keys, trace, children)

    return run


@programs.jit(
    static_argnames=(
        "method",
        "aux",
        "axes",
        "init_radius",
        "num_eval_samples",
        "progress_every",
        "mesh",
    ),
)
def _fit_batch_compiled(
    rng_keys,
    children,
    init_params,
    hyperparameters,
    *,
    method,
    aux,
    axes,
    init_radius,
    num_eval_samples,
    progress_every,
    mesh,
) -> FitOutput:
    run = _program(
        method, aux, axes, init_radius, num_eval_samples, progress_every, mesh is not None
    )
    if mesh is None:
        return run(rng_keys, children, init_params, hyperparameters)
    # Each device runs its own shard's loop to its own end: no collective per step.
    split, shared = PartitionSpec("batch"), PartitionSpec()
    in_specs = (
        split,
        [shared if axis is None else split for axis in axes],
        split,
        None if hyperparameters is None else split,
    )
    return jax.shard_map(run, mesh=mesh, in_specs=in_specs, out_specs=split, check_vma=False)(
        rng_keys, children, init_params, hyperparameters
    )


class BatchFitResult:
    """The results of a batch of fits; ``result[i]`` is member i's ``FitResult``.

    Attributes:
      params: q's parameters with a leading axis B on every leaf (``loc``: (B, D)).
      info: ``FitInfo`` with leaves (B,).
      trace: (B, max_steps) objective traces, NaN after each member's stop.
      target: the target (batched when the fit was over targets).
    """

    def __init__(self, output: FitOutput, target: Target, *, batched_target: bool):
        self.params = output.params
        self.info = output.info
        self.trace = output.trace
        self.target = target
        self._batched_target = batched_target

    def __len__(self) -> int:
        return self.params.loc.shape[0]

    def __getitem__(self, i: int) -> FitResult:
        if not -len(self) <= i < len(self):
            raise IndexError(f"member {i} is out of range for a batch of {len(self)}")
        output = jax.tree.map(lambda x: x[i], FitOutput(self.params, self.trace, self.info))
        target = member(self.target, i) if self._batched_target else self.target
        return FitResult(output, target)

    @property
    def stop_reasons(self) -> list[str]:
        """Why each member stopped (see ``vi.fitting.state.STATUS_NAMES``)."""
        return [STATUS_NAMES[int(s)] for s in np.asarray(self.info.status)]

    def __repr__(self) -> str:
        summary = _summary(self.info.status)
        return f"BatchFitResult({len(self)} fits of dim {self.params.loc.shape[-1]}: {summary})"


def _batch_size(rng_keys) -> int:
    if not isinstance(rng_keys, jax.Array) or rng_keys.ndim < 1:
        raise TypeError(
            "rng_keys must be a batch of JAX keys, e.g. jax.random.split(jax.random.key(0), B)"
        )
    if jnp.issubdtype(rng_keys.dtype, jax.dtypes.prng_key):
        if rng_keys.ndim != 1:
            raise ValueError(f"rng_keys must have shape (B,), got {rng_keys.shape}")
    elif rng_keys.ndim != 2:
        raise ValueError(f"raw rng_keys must have shape (B, 2), got {rng_keys.shape}")
    if rng_keys.shape[0] == 0:
        raise ValueError("rng_keys is empty: give at least one key")
    check_rng_key(rng_keys[0], "rng_keys[0]")
    return rng_keys.shape[0]


def _check_batch(target, batch, batched_target, method, hyperparameters):
    if batched_target:
        for leaf in jax.tree.leaves(target):
            if is_array(leaf) and not (leaf.ndim >= 1 and leaf.shape[0] == batch):
                raise ValueError(
                    f"batched_target=True needs every array of the target to have a leading "
                    f"axis of {batch} (the number of keys), got one of shape {np.shape(leaf)}"
                )
    if hyperparameters is None:
        return
    if not isinstance(method, Stochastic):
        raise TypeError(
            "hyperparameters set values in the optimizer's state (optax.inject_hyperparams): "
            f"give method=vi.Stochastic(optimizer=...), not {type(method).__name__}"
        )
    if not isinstance(hyperparameters, dict) or not hyperparameters:
        raise TypeError(
            "hyperparameters must be a dict from a hyperparameter's name to its (B,) values, "
            "e.g. {'learning_rate': jnp.array([1e-3, 1e-2])}"
        )
    dim = target.init_position.shape[-1]
    probe = MeanFieldParams(jnp.zeros(dim), jnp.zeros(dim))
    opt_state = jax.eval_shape(method.optimizer.init, probe)
    for name, values in hyperparameters.items():
        try:
            found = optax.tree.get(opt_state, name)
        except KeyError:
            raise ValueError(
                f"hyperparameters[{name!r}]: the optimizer's state holds {name!r} more than "
                "once, so it is not clear which to set"
            ) from None
        if found is None:
            raise ValueError(
                f"hyperparameters[{name!r}]: the optimizer's state has no {name!r}; build the "
                f"optimizer with optax.inject_hyperparams, e.g. "
                f"optax.inject_hyperparams(optax.adam)({name}=...)"
            )
        if np.shape(values)[:1] != (batch,):
            raise ValueError(
                f"hyperparameters[{name!r}] must have a leading axis of {batch} (the number of "
                f"keys), got shape {np.shape(values)}"
            )


def fit_batch(
    rng_keys: jax.Array,
    target: Target,
    *,
    method=None,
    objective=None,
    batched_target: bool = False,
    hyperparameters: dict | None = None,
    init_params: Params | None = None,
    family=None,
    init_scale: float = 0.1,
    init_radius: float | None = None,
    num_eval_samples: int = 1024,
    progress: bool | None = None,
    shard: bool = True,
    devices=None,
    chunk_size: int | None = None,
) -> BatchFitResult:
    """Runs B fits as one compiled program; member ``i`` is ``vi.fit(rng_keys[i], ...)``.

    Args:
      rng_keys: (B,) keys, one per fit (restarts differ by key; with ``init_radius`` they
        also start in different places).
      target: one target for every member, or with ``batched_target=True`` a target whose
        array leaves have a leading axis B (``vi.stack_targets``: datasets of equal shape,
        or target parameters).
      method: as for ``vi.fit``.
      objective: as for ``vi.fit``.
      batched_target: whether ``target`` carries the batch axis.
      hyperparameters: ``{name: (B,) values}`` set in each member's optimizer state, for an
        optimizer built with ``optax.inject_hyperparams``, e.g.
        ``method=vi.Stochastic(optimizer=optax.inject_hyperparams(optax.adam)(1e-2))`` and
        ``hyperparameters={"learning_rate": jnp.array([1e-3, 1e-2])}``.
      init_params: initial parameters with leading axis B, or an earlier
        ``BatchFitResult`` of B fits (default: from the target).
      family: as for ``vi.fit``.
      init_scale, init_radius, num_eval_samples, progress: as for ``vi.fit``.
      shard: split the batch over the devices when there are several.
      devices: the devices to run on (one platform), e.g. ``jax.devices("cpu")`` on a GPU
        host; default: the default backend's local devices (every GPU, else every CPU
        device).
      chunk_size: members per compiled call; a larger batch runs in chunks, in turn, each
        handed to the host before the next (progress per chunk), so memory stays bounded.
        Default: the whole batch when it fits in half the devices' free memory, measured
        from the compiled program for 4,096 members when the batch is larger (one
        compilation more); else the most members that fit.

    Returns:
      A ``BatchFitResult``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import vi
      >>> target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
      >>> keys = jax.random.split(jax.random.key(0), 8)
      >>> batch = vi.fit_batch(keys, target, init_radius=2.0)
      >>> len(batch), batch.stop_reasons[0]
      (8, 'converged')
    """
    batch = _batch_size(rng_keys)
    check_target(target, batch if batched_target else None)
    one = member(target, 0) if batched_target else target
    method, problem = resolve(one, method, objective, init_params, init_radius, family)
    problem = Problem(target, problem.objective)
    _check_batch(target, batch, batched_target, method, hyperparameters)
    check_num_eval_samples(num_eval_samples)
    init_params = initial_params(one, init_params, (batch,), init_scale, family)
    children, aux = problem.tree_flatten()
    num_target = len(jax.tree.leaves(target))
    axes = tuple(
        0 if batched_target and i < num_target and child is not None else None
        for i, child in enumerate(children)
    )
    progress_every = report_every(method.max_steps) if progress_enabled(progress) else None
    static = dict(
        method=method,
        aux=aux,
        axes=axes,
        init_radius=init_radius,
        num_eval_samples=num_eval_samples,
        progress_every=progress_every,
    )
    entry = ("fit_batch", method, init_radius, batched_target, shard, progress_every)
    warn_if_new_objects(entry, problem, (rng_keys, init_params, hyperparameters))
    inputs = (rng_keys, children, init_params, hyperparameters)
    devices = _chosen_devices(devices, shard)
    with held_interrupts() as check_interrupt:
        chunk = _chunk_size(chunk_size, batch, inputs, axes, static, devices)
        num_chunks = -(-batch // chunk)
        parts = []
        for index in range(num_chunks):
            check_interrupt()
            members = slice(index * chunk, min((index + 1) * chunk, batch))
            part = inputs if num_chunks == 1 else _take(inputs, axes, members, chunk)
            where = "" if num_chunks == 1 else f", chunk {index + 1}/{num_chunks}"
            size = members.stop - members.start
            output = _run(part, axes, static, devices, f"fit{where}", size)
            if num_chunks > 1:  # to the host: a chunk's arrays leave the device before the next
                output = jax.device_get(output)
            parts.append(output)
    if num_chunks > 1:
        output = jax.tree.map(lambda *xs: jnp.asarray(np.concatenate(xs)), *parts)
    status = output.info.status
    failed = np.flatnonzero(np.asarray(status) == NONFINITE) if concrete(status) else []
    if len(failed):
        warnings.warn(
            f"{len(failed)} of {batch} fits ended non-finite (members {failed[:10].tolist()}"
            f"{', ...' if len(failed) > 10 else ''}); the others are unaffected. "
            "result[i] says where member i failed and what usually cures it.",
            RuntimeWarning,
            stacklevel=2,
        )
    return BatchFitResult(output, target, batched_target=batched_target)


def _chosen_devices(devices, shard: bool) -> list:
    """The devices a batch runs on: ``devices`` as given, else the default backend's local
    devices (the GPUs on a GPU host, else the CPU devices); only the first without ``shard``."""
    if devices is None:
        devices = jax.local_devices()
    elif isinstance(devices, jax.Device):
        devices = [devices]
    else:
        devices = list(devices)
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise TypeError(
                "devices must be a non-empty sequence of JAX devices, e.g. jax.devices('cpu'), "
                f"got {devices!r}"
            )
        platforms = {d.platform for d in devices}
        if len(platforms) > 1:
            raise ValueError(f"devices must be of one platform, got {sorted(platforms)}")
    return devices if shard else devices[:1]


def _run(inputs, axes, static, devices, description: str, num_members: int) -> FitOutput:
    """One compiled batch over ``devices`` (sharded when there are several), handed back on
    the first of them, trimmed to ``num_members``."""
    batch = len(inputs[0])
    num_devices = min(len(devices), batch)
    mesh = None
    if num_devices > 1:
        mesh = Mesh(np.asarray(devices[:num_devices]), ("batch",))
        sharded = _shard_inputs(inputs, axes, mesh, batch)
        if _lapack_on_cpu(sharded, mesh, static):
            mesh = None  # see _lapack_on_cpu: one device, every core to its LAPACK calls
        else:
            inputs = sharded
    if mesh is None and devices[0] != jax.local_devices()[0] and concrete(inputs[0]):
        inputs = jax.device_put(inputs, devices[0])
    method, progress_every = static["method"], static["progress_every"]
    bar = ProgressBar(method.max_steps, num_members, description=description)
    with bar if progress_every else contextlib.nullcontext():
        output = jax.block_until_ready(_fit_batch_compiled(*inputs, mesh=mesh, **static))
        if progress_every:
            status = output.info.status[:num_members]
            bar.finish(int(jnp.max(output.info.num_steps[:num_members])), _summary(status))
    if mesh is not None:
        # Hand back arrays on one device: later computations on arrays split over host
        # devices run as multi-device programs, which can deadlock on XLA:CPU when the
        # devices outnumber its threads (seen with 2 devices on 2 cores).
        output = jax.device_put(output, devices[0])
    if len(output.info.status) != num_members:  # padded to fill the devices or the chunk
        output = jax.tree.map(lambda x: x[:num_members], output)
    return output


def _take(inputs, axes, members: slice, size: int):
    """The batched inputs of ``members``, padded to ``size`` with copies of the last one (so
    that every chunk has one shape and one compiled program); shared inputs as they are."""
    rng_keys, children, init_params, hyperparameters = inputs

    take = lambda leaf: _pad(leaf[members], size)

    children = [
        c if a is None else jax.tree.map(take, c) for c, a in zip(children, axes, strict=True)
    ]
    return (
        take(rng_keys),
        children,
        jax.tree.map(take, init_params),
        jax.tree.map(take, hyperparameters),
    )


_PROBE_MEMBERS = 4096
"""Members of the batch compiled to measure a member's memory, when the batch is larger."""

_MEMORY_FRACTION = 0.5
"""The share of a device's free memory one chunk may take."""


def _free_bytes(device) -> int | None:
    """Free memory of ``device``: the allocator's limit less what is in use on a GPU, the
    host's available memory shared by its CPU devices; None when unknown."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    host = int(line.split()[1]) * 1024
                    return host // max(1, len(jax.local_devices(backend="cpu")))
    except OSError:
        pass
    return None


def _chunk_size(chunk_size, batch: int, inputs, axes, static, devices) -> int:
    """Members per chunk: ``chunk_size`` when given; else the whole batch when it is at
    most ``_PROBE_MEMBERS``, or when the program for that many members, compiled to measure
    it, says the whole batch takes under half the devices' free memory; else the most that
    do (a multiple of the device count)."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        return min(chunk_size, batch)
    if batch <= _PROBE_MEMBERS or not concrete(inputs[0]):
        return batch
    free = _free_bytes(devices[0])
    if free is None:
        return batch
    probe = _take(inputs, axes, slice(0, _PROBE_MEMBERS), _PROBE_MEMBERS)
    num_devices = min(len(devices), _PROBE_MEMBERS)
    mesh = None
    if num_devices > 1:
        mesh = Mesh(np.asarray(devices[:num_devices]), ("batch",))
        probe = _shard_inputs(probe, axes, mesh, _PROBE_MEMBERS)
    memory = _fit_batch_compiled.lower(*probe, mesh=mesh, **static).compile().memory_analysis()
    if memory is None:
        return batch
    used = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
    per_member = max(used / (_PROBE_MEMBERS / num_devices), 1.0)  # on one device
    per_device = int(_MEMORY_FRACTION * free / per_member)
    if per_device * num_devices >= batch:
        return batch
    return max(per_device, 1) * num_devices


def _summary(status) -> str:
    counts: dict[str, int] = {}
    for s in np.asarray(status):
        counts[STATUS_NAMES[int(s)]] = counts.get(STATUS_NAMES[int(s)], 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


_LAPACK_SEEN: collections.OrderedDict = collections.OrderedDict()
"""Whether a batch program calls LAPACK, by its static arguments and input shapes, most
recent last; bounded, cleared by ``forget()``."""


def forget() -> None:
    """Forgets which batch programs were found to call LAPACK."""
    _LAPACK_SEEN.clear()


def _lapack_on_cpu(inputs, mesh: Mesh, static: dict) -> bool:
    """Whether the batch's program makes LAPACK calls on the CPU backend, which can
    deadlock it when sharded (see ``vi.backend._lapack``).

    The whole program is traced (not compiled), so a call anywhere is found: in the log
    density, in a sampler the fit draws from, in a user's optimizer. When none is found the
    program then runs from this same trace, which ``jit`` keeps. The answer is kept for the
    same static arguments and input shapes, so a repeated batch does not trace again.
    """
    if not backend.cpu_path():
        return False
    leaves, treedef = jax.tree.flatten(inputs)
    shapes = tuple((x.shape, x.dtype, getattr(x, "weak_type", False)) for x in leaves)
    key = (tuple(static.items()), mesh, treedef, shapes)
    if key not in _LAPACK_SEEN:
        jaxpr = _fit_batch_compiled.trace(*inputs, mesh=mesh, **static).jaxpr.jaxpr
        _LAPACK_SEEN[key] = backend.uses_lapack(jaxpr)
        while len(_LAPACK_SEEN) > 64:
            _LAPACK_SEEN.popitem(last=False)
    _LAPACK_SEEN.move_to_end(key)
    return _LAPACK_SEEN[key]


def _pad(leaf, size: int):
    """``leaf`` with its leading axis filled up to ``size`` by copies of its last member."""
    missing = size - leaf.shape[0]
    return leaf if not missing else jnp.concatenate([leaf, jnp.repeat(leaf[-1:], missing, 0)])


def _shard_inputs(inputs, axes, mesh: Mesh, batch: int):
    """Places the inputs on the mesh, in one transfer: the batch axis padded to a multiple
    of the device count (with copies of the last member) and split over the devices, the
    shared inputs replicated."""
    rng_keys, children, init_params, hyperparameters = inputs
    padded = -(-batch // mesh.devices.size) * mesh.devices.size
    pad = lambda leaf: _pad(leaf, padded)

    split, shared = (
        NamedSharding(mesh, PartitionSpec("batch")),
        NamedSharding(mesh, PartitionSpec()),
    )
    batched = (
        rng_keys,
        [c if a is not None else None for c, a in zip(children, axes, strict=True)],
        init_params,
        hyperparameters,
    )
    batched = jax.device_put(jax.tree.map(pad, batched), split)
    common = jax.device_put(
        [c if a is None else None for c, a in zip(children, axes, strict=True)], shared
    )
    children = [b if a is not None else c for b, c, a in zip(batched[1], common, axes, strict=True)]
    return batched[0], children, batched[2], batched[3]


__all__ = ["BatchFitResult", "fit_batch"]

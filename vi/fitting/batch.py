"""Many fits as one compiled program: over seeds, datasets and hyperparameters.

``fit_batch`` runs B fits as one ``while_loop`` over a ``vmap`` of their steps
(``vi.fitting.loop.run_batch``), one compilation for the whole batch, with the
batch axis split over every local device (``shard_map`` on a one-axis ``Mesh``):
each device runs its share as its own loop, to its own end, with no
communication between devices. On a CPU, ``import vi`` makes one JAX device per
core (``vi._cpu_devices``), so a batch uses every core by default. A member that
converges stops updating while the rest go on; a member that fails is flagged
and cannot change the others' results.

Across machines, the same program runs under JAX's own distributed runtime:
call ``jax.distributed.initialize()`` in every process, then ``fit_batch`` with
the keys of this process's share of the sweep (for example
``rng_keys[jax.process_index()::jax.process_count()]``): each process shards its
share over its local devices, and the results are gathered by the caller.
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vi.families.mean_field import MeanFieldParams
from vi.fitting.lapack import uses_lapack
from vi.fitting.loop import run_batch
from vi.fitting.recompile import warn_if_new_objects
from vi.fitting.result import FitResult
from vi.fitting.spec import (
    FitOptions,
    Spec,
    check_optimizer,
    check_rng_key,
    initialise,
    loop_for,
    member,
    prepare,
    progress_bar,
    progress_options,
    split_target,
)
from vi.fitting.state import STATUS_NAMES, FitOutput
from vi.targets.target import Target, is_array

DEFAULT_CHUNK_SIZE = 16
"""Members per chunk of a batch step (``experiments/benchmarks/bench_batch.py``)."""


@functools.partial(
    jax.jit, static_argnames=("spec", "target_axis", "hyper_axis", "mesh", "chunk_size")
)
def _fit_batch_compiled(
    rng_keys,
    arrays,
    init_params,
    draws,
    hyperparameters,
    *,
    spec,
    target_axis,
    hyper_axis,
    mesh,
    chunk_size=None,
) -> FitOutput:
    def run(rng_keys, arrays, init_params, draws, hyperparameters):
        """The members it is given as one ``while_loop`` (on one device, or one shard)."""
        rng_keys, init_params = jax.vmap(lambda k, p: initialise(k, p, spec.init_radius))(
            rng_keys, init_params
        )

        def make_loop(member):
            member_arrays, member_hyper = member
            return loop_for(spec, member_arrays, draws, member_hyper)

        progress = progress_options(spec)
        if progress and mesh is not None:
            progress["progress_args"] = (jax.lax.axis_index("batch"),)
        return run_batch(
            make_loop,
            rng_keys,
            init_params,
            (arrays, hyperparameters),
            member_axes=(target_axis, hyper_axis),
            chunk_size=chunk_size,
            **progress,
        )

    if mesh is None:
        return run(rng_keys, arrays, init_params, draws, hyperparameters)
    # Each device runs its own shard's loop to its own end: no collective per step.
    split, shared = PartitionSpec("batch"), PartitionSpec()
    in_specs = (
        split,
        [split if target_axis == 0 else shared] * len(arrays),
        split,
        shared,
        split if hyper_axis == 0 else shared,
    )
    return jax.shard_map(run, mesh=mesh, in_specs=in_specs, out_specs=split, check_vma=False)(
        rng_keys, arrays, init_params, draws, hyperparameters
    )


class BatchFitResult:
    """The results of a batch of fits; ``result[i]`` is member i's ``FitResult``.

    Attributes:
      params: ``MeanFieldParams`` with leaves (B, D).
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
        counts: dict[str, int] = {}
        for reason in self.stop_reasons:
            counts[reason] = counts.get(reason, 0) + 1
        summary = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        return f"BatchFitResult({len(self)} fits of dim {self.params.loc.shape[-1]}: {summary})"


def _batch_size(rng_keys) -> int:
    if not isinstance(rng_keys, jax.Array) or rng_keys.ndim < 1:
        raise TypeError(
            "rng_keys must be a batch of JAX keys, e.g. jax.random.split(jax.random.key(0), B)"
        )
    check_rng_key(rng_keys[0])
    if jax.numpy.issubdtype(rng_keys.dtype, jax.dtypes.prng_key):
        if rng_keys.ndim != 1:
            raise ValueError(f"rng_keys must have shape (B,), got {rng_keys.shape}")
    elif rng_keys.ndim != 2:
        raise ValueError(f"raw rng_keys must have shape (B, 2), got {rng_keys.shape}")
    return rng_keys.shape[0]


def _shard(leaf, batched: bool, mesh: Mesh, batch: int):
    """Places one input on the mesh: the batch axis padded to a multiple of the
    device count (with copies of the last member) and split over the devices."""
    if leaf is None:
        return None
    if not batched:
        return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec()))
    num_devices = mesh.devices.size
    padded = -(-batch // num_devices) * num_devices
    if padded != batch:
        fill = jax.numpy.repeat(leaf[-1:], padded - batch, axis=0)
        leaf = jax.numpy.concatenate([leaf, fill])
    return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec("batch")))


def fit_batch(
    rng_keys: jax.Array,
    target: Target,
    *,
    batched_target: bool = False,
    hyperparameters=None,
    shard: bool = True,
    objective: str = "reverse_kl",
    method: str | None = None,
    estimator: str | None = None,
    draws=None,
    optimizer=None,
    num_samples: int | None = None,
    max_steps: int | None = None,
    init_params: MeanFieldParams | None = None,
    init_scale: float = 0.1,
    init_radius: float | None = None,
    stick_the_landing: bool = False,
    tol: float | None = None,
    min_ess_fraction: float = 0.02,
    num_eval_samples: int = 1024,
    progress: bool | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> BatchFitResult:
    """Runs B fits as one compiled program; the options are ``vi.fit``'s.

    Args:
      rng_keys: (B,) keys, one per fit (restarts differ by key; with
        ``init_radius`` they also start in different places).
      target: one target for every member, or with ``batched_target=True`` a
        target whose array leaves have a leading axis B (``vi.stack_targets``:
        datasets of equal shape, or target parameters).
      batched_target: whether ``target`` carries the batch axis.
      hyperparameters: a pytree with leading axis B, given to ``optimizer`` (then
        a function ``hyperparameters -> optax optimizer``) for each member, e.g.
        ``optimizer=optax.adam, hyperparameters=jnp.array([1e-3, 1e-2])``.
      shard: shard the batch over all local devices when there are several.
      chunk_size: each device takes its members' steps this many at a time, one chunk
        after another, so that a chunk's working set stays in cache (on a CPU, 256 fits
        of a logistic regression over one shared dataset ran 3.6x faster in chunks of 16
        than all at once); None: all at once.
      init_params: initial parameters with leading axis B (default: from the target).
      **others: as for ``vi.fit``.

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
    if batched_target:
        for leaf in jax.tree.leaves(target):
            if is_array(leaf) and not (leaf.ndim >= 1 and leaf.shape[0] == batch):
                raise ValueError(
                    f"batched_target=True needs every array of the target to have a leading "
                    f"axis of {batch} (the number of keys), got one of shape {np.shape(leaf)}"
                )
    if hyperparameters is None:
        check_optimizer(optimizer)
    else:
        if not callable(optimizer) or hasattr(optimizer, "update"):
            raise TypeError(
                "with hyperparameters, optimizer must be a function from one member's "
                "hyperparameters to an optax optimizer, e.g. optimizer=optax.adam"
            )
        for leaf in jax.tree.leaves(hyperparameters):
            if np.shape(leaf)[:1] != (batch,):
                raise ValueError(
                    f"hyperparameters must have a leading axis of {batch} (the number of "
                    f"keys), got a leaf of shape {np.shape(leaf)}"
                )
    options = FitOptions(
        objective=objective,
        method=method if hyperparameters is None else (method or "stochastic"),
        estimator=estimator,
        draws=draws,
        optimizer=optimizer,
        num_samples=num_samples,
        max_steps=max_steps,
        init_params=init_params,
        init_scale=init_scale,
        init_radius=init_radius,
        stick_the_landing=stick_the_landing,
        tol=tol,
        min_ess_fraction=min_ess_fraction,
        num_eval_samples=num_eval_samples,
        progress=progress,
    )
    spec, init_params, draws = prepare(
        target, options, batch_size=batch, batched_target=batched_target
    )
    warn_if_new_objects(
        ("fit_batch", batched_target, shard, chunk_size),
        spec,
        (rng_keys, split_target(target)[0], init_params, draws, hyperparameters),
    )
    return run_prepared(
        rng_keys,
        target,
        spec,
        init_params,
        draws,
        hyperparameters,
        batched_target=batched_target,
        shard=shard,
        chunk_size=chunk_size,
    )


def run_prepared(
    rng_keys: jax.Array,
    target: Target,
    spec: Spec,
    init_params: MeanFieldParams,
    draws,
    hyperparameters=None,
    *,
    batched_target: bool = False,
    shard: bool = True,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> BatchFitResult:
    """The second half of ``fit_batch``, after ``vi.fitting.spec.prepare``: places the
    inputs on the devices, runs the compiled batch and wraps its output."""
    batch = rng_keys.shape[0]
    inputs, static = _program_args(
        rng_keys,
        target,
        spec,
        init_params,
        hyperparameters,
        batched_target=batched_target,
        chunk_size=chunk_size,
    )
    mesh = None
    num_devices = min(len(jax.local_devices()), batch)
    if shard and num_devices > 1:
        mesh = Mesh(np.asarray(jax.local_devices()[:num_devices]), ("batch",))
        sharded = _shard_inputs(inputs, batched_target, mesh, batch)
        if _lapack_on_cpu(sharded, draws, mesh, static):
            mesh = None  # see _lapack_on_cpu: one device, every core to its LAPACK calls
        else:
            inputs = sharded
    rng_keys, arrays, init_params, hyperparameters = inputs
    with progress_bar(spec, batch):
        output = _fit_batch_compiled(
            rng_keys, arrays, init_params, draws, hyperparameters, mesh=mesh, **static
        )
        jax.block_until_ready(output)
    if mesh is not None:
        # Hand back arrays on one device: later computations on arrays split over host
        # devices run as multi-device programs, which can deadlock on XLA:CPU when the
        # devices outnumber its threads (seen with 2 devices on 2 cores).
        output = jax.device_put(output, jax.local_devices()[0])
    output = jax.tree.map(lambda x: x[:batch], output)
    return BatchFitResult(output, target, batched_target=batched_target)


def _program_args(
    rng_keys, target, spec, init_params, hyperparameters, *, batched_target, chunk_size
):
    """The batch program's array inputs (but ``draws``) and its static arguments."""
    arrays, _ = split_target(target)
    inputs = (rng_keys, arrays, init_params, hyperparameters)
    static = dict(
        spec=spec,
        target_axis=0 if batched_target else None,
        hyper_axis=None if hyperparameters is None else 0,
        chunk_size=chunk_size,
    )
    return inputs, static


def _lapack_on_cpu(inputs, draws, mesh: Mesh | None, static: dict) -> bool:
    """Whether the batch's program makes LAPACK calls on the CPU backend, which can
    deadlock it when sharded (see ``vi.fitting.lapack``).

    The whole program is traced (not compiled), so a call anywhere is found: in the log
    density, in a sampler the fit draws from, in a user's optimizer. When none is found the
    program then runs from this same trace, which ``jit`` keeps; when one is, the inputs
    were placed on the devices for nothing and the one-device program is traced anew.
    """
    if jax.default_backend() != "cpu":
        return False
    rng_keys, arrays, init_params, hyperparameters = inputs
    traced = _fit_batch_compiled.trace(
        rng_keys, arrays, init_params, draws, hyperparameters, mesh=mesh, **static
    )
    return uses_lapack(traced.jaxpr.jaxpr)


def _shard_inputs(inputs, batched_target: bool, mesh: Mesh, batch: int):
    rng_keys, arrays, init_params, hyperparameters = inputs
    over_batch = lambda tree: jax.tree.map(lambda x: _shard(x, True, mesh, batch), tree)
    return (
        _shard(rng_keys, True, mesh, batch),
        [_shard(a, batched_target, mesh, batch) for a in arrays],
        over_batch(init_params),
        over_batch(hyperparameters),
    )


__all__ = ["BatchFitResult", "Spec", "fit_batch"]

"""One JAX CPU device per usable core, so that batched fits use every core.

Importing this module (``vi/__init__.py`` does, first) calls ``use_every_core()``.

XLA:CPU runs a program on one device, and a vmapped batch of fits keeps only a
little more than one core busy (1.1 to 1.4 of 2 measured in
``experiments/benchmarks/bench_batch.py``). ``vi.fit_batch`` shards its batch
over the local devices, so when ``vi`` is imported before JAX has started its
backends, it asks JAX for one CPU device per core this process may run on.

Nothing is changed when:

- JAX's backends have already started (an array was made before ``import vi``);
- the user chose a number: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
  or ``jax.config.update("jax_num_cpu_devices", N)`` before ``import vi``;
- ``VI_CPU_DEVICES`` is set in the environment: ``VI_CPU_DEVICES=1`` keeps JAX's
  single CPU device, ``VI_CPU_DEVICES=N`` asks for N.

A program that is not sharded (``vi.fit``, any plain ``jax.jit`` call) still runs
on the first device, as it would with one device. On a GPU host the GPUs stay
the default devices and this only shapes the CPU backend.
"""

import os

import jax

ENV_VAR = "VI_CPU_DEVICES"


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def requested_devices() -> int | None:
    """How many CPU devices vi should ask for, or None to leave JAX as it is."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    if jax.config.jax_num_cpu_devices != -1:
        return None
    text = os.environ.get(ENV_VAR)
    if text is None:
        return usable_cores()
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a positive integer, got {text!r}") from None
    if count < 1:
        raise ValueError(f"{ENV_VAR} must be a positive integer, got {text!r}")
    return count


def use_every_core() -> None:
    """Asks JAX for ``requested_devices()`` CPU devices if its backends have not started."""
    count = requested_devices()
    if count is None or count == 1:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX's backends have started: too late to change, keep them
        pass


use_every_core()

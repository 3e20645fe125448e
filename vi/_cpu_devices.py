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

With more than one CPU device, the thread pool that XLA:CPU shares between them
is widened to devices + cores threads (through ``PJRT_NPROC``, unless it is set).
Each device runs its program on a thread of that pool, and on jaxlib 0.10.2 a
batched LAPACK call inside a program (a vmapped ``solve_triangular`` or
``cholesky``, as in a Gaussian mixture's log density) splits its batch over the
same pool and waits for the parts: with as many devices as threads, every
thread can end up waiting and the process hangs. Measured here: a sharded
``fit_batch`` on ``vi.targets.mixture.mixture_10d`` hung in 1 of 4 runs with the
default pool of 2 threads and finished in 3 of 3 with 4.
"""

import os
import re

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


POOL_ENV_VAR = "PJRT_NPROC"  # read by XLA when it makes the CPU client's thread pool


def configured_devices() -> int:
    """The number of CPU devices JAX will make, as configured so far."""
    match = re.search(
        r"xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", "")
    )
    if match:
        return int(match.group(1))
    return max(1, jax.config.jax_num_cpu_devices)


def use_every_core() -> None:
    """Asks JAX for ``requested_devices()`` CPU devices if its backends have not started,
    and widens XLA's thread pool when there will be more than one."""
    count = requested_devices()
    if count is not None and count > 1:
        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:  # JAX's backends have started: too late to change, keep them
            return
    devices = configured_devices()
    if devices > 1 and POOL_ENV_VAR not in os.environ:
        os.environ[POOL_ENV_VAR] = str(devices + usable_cores())


use_every_core()

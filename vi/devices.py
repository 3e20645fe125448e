"""JAX CPU devices for batched fits: one per core, when the user asks for them.

XLA:CPU runs a program on one device, and a vmapped batch of fits keeps only a
little more than one core busy (1.1 to 1.4 of 2 measured in
``experiments/benchmarks/bench_batch.py``). ``vi.fit_batch`` shards its batch over
the local devices, so a program that calls :func:`set_cpu_devices` before JAX
starts gets a batch spread over every core. Importing ``vi`` changes no JAX
setting; ``vifit run`` owns its process and calls :func:`set_cpu_devices` itself, as
``numpyro.set_host_device_count`` is called by NumPyro's users.
"""

import numbers
import os
import re

import jax

_FORCED_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_cpu_devices(n: int | None = None) -> int:
    """Asks JAX for ``n`` CPU devices; call it first, before any JAX computation.

    JAX fixes its devices when its backends start, at the first computation (making
    an array is one; ``import jax`` and ``import vi`` are not). Programs that are not
    sharded, such as ``vi.fit``, still run on the first device. On a GPU host the
    GPUs stay the default devices and this only shapes the CPU backend.

    A count chosen in the environment wins over ``n``, and nothing is changed, when
    ``XLA_FLAGS`` holds ``--xla_force_host_platform_device_count=N`` or
    ``JAX_NUM_CPU_DEVICES=N`` is set: the returned count is then ``N``. So
    ``JAX_NUM_CPU_DEVICES=1 vifit run ...`` keeps JAX's single CPU device.

    Once JAX's backends have started, a call asking for the CPU device count they
    already have returns it and does nothing; any other count raises.

    Args:
      n: the number of CPU devices, a positive integer; None for one per core this
        process may run on (its CPU affinity).

    Returns:
      The number of CPU devices JAX gets (or already has).

    Raises:
      ValueError: ``n`` is not a positive integer or None.
      RuntimeError: JAX's backends have already started with another number of CPU
        devices, which can no longer change.

    Examples:
      >>> import jax
      >>> import vi
      >>> vi.set_cpu_devices(2)  # before anything else in the program runs JAX
      2
      >>> len(jax.devices("cpu"))
      2
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    chosen = _count_in_environment()
    if chosen is not None:
        return chosen
    count = usable_cores() if n is None else int(n)
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX's backends have started; a setting unchanged passes
        started = _started_cpu_count()
        if started == count:
            return count
        has = "no CPU backend" if started is None else f"{started} CPU device(s)"
        raise RuntimeError(
            f"vi.set_cpu_devices({n}) asks for {count} CPU device(s), but JAX has already "
            f"started with {has}; call vi.set_cpu_devices first in the program, before "
            "any JAX computation (creating an array is one)"
        ) from None
    return count


def _count_in_environment() -> int | None:
    """The CPU device count set by ``XLA_FLAGS`` or ``JAX_NUM_CPU_DEVICES``, if any."""
    forced = _FORCED_COUNT.findall(os.environ.get("XLA_FLAGS", ""))
    if forced:
        return int(forced[-1])
    try:
        count = int(os.environ.get("JAX_NUM_CPU_DEVICES", ""))
    except ValueError:  # unset; JAX rejected any other non-integer when it was imported
        return None
    return count if count > 0 else None


def _started_cpu_count() -> int | None:
    try:
        return jax.local_device_count("cpu")
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return None

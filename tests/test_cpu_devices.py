"""``import vi`` gives JAX one CPU device per usable core, unless the user chose otherwise."""

import os
import subprocess
import sys

import pytest

from vi._cpu_devices import usable_cores


def _device_count(code: str, **env) -> str:
    """Runs ``code`` in a fresh interpreter; returns its last line of output."""
    ours = ("XLA_FLAGS", "VI_CPU_DEVICES", "PJRT_NPROC")
    environ = {k: v for k, v in os.environ.items() if k not in ours}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 or "Error" in result.stderr, result.stderr[-2000:]
    return (result.stdout.strip().splitlines() or [""])[-1] + result.stderr[-500:]


COUNT = "import vi, jax; print(jax.local_device_count())"


def test_import_vi_makes_one_cpu_device_per_usable_core():
    assert _device_count(COUNT).startswith(str(usable_cores()))


def test_vi_cpu_devices_overrides_the_count():
    assert _device_count(COUNT, VI_CPU_DEVICES="1").startswith("1")
    assert _device_count(COUNT, VI_CPU_DEVICES="3").startswith("3")


def test_a_count_the_user_chose_is_kept():
    flags = "--xla_force_host_platform_device_count=5"
    assert _device_count(COUNT, XLA_FLAGS=flags).startswith("5")
    chosen = "import jax; jax.config.update('jax_num_cpu_devices', 3); " + COUNT
    assert _device_count(chosen).startswith("3")


def test_a_backend_started_before_import_vi_is_left_alone():
    started = "import jax; jax.numpy.ones(1); " + COUNT
    assert _device_count(started).startswith("1")


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_vi_cpu_devices_names_the_variable(value):
    out = _device_count(COUNT, VI_CPU_DEVICES=value)
    assert "VI_CPU_DEVICES must be a positive integer" in out


POOL = "import vi, os; print(os.environ.get('PJRT_NPROC'))"


def test_the_thread_pool_is_widened_for_more_than_one_device():
    assert _device_count(POOL, VI_CPU_DEVICES="3").startswith(str(3 + usable_cores()))
    flags = "--xla_force_host_platform_device_count=4"
    assert _device_count(POOL, XLA_FLAGS=flags).startswith(str(4 + usable_cores()))
    assert _device_count(POOL, VI_CPU_DEVICES="1").startswith("None")
    assert _device_count(POOL, VI_CPU_DEVICES="3", PJRT_NPROC="7").startswith("7")


SHARDED_MIXTURE_FIT = """
import jax, optax, vi
from vi.targets.mixture import mixture_10d
keys = jax.random.split(jax.random.key(0), 8)
result = vi.fit_batch(keys, mixture_10d(), method="stochastic", optimizer=optax.adam(1e-2),
                      max_steps=500, progress=False)
print(jax.local_device_count(), int(result.info.num_steps.min()))
"""


def test_a_sharded_fit_with_batched_lapack_calls_does_not_hang():
    # Four devices on the default pool of two threads hung here every time: each device's
    # vmapped solve_triangular waited for pool threads that were all waiting too.
    flags = "--xla_force_host_platform_device_count=4"
    assert _device_count(SHARDED_MIXTURE_FIT, XLA_FLAGS=flags).startswith("4 500")

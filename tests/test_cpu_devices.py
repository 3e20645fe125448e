"""``import vi`` gives JAX one CPU device per usable core, unless the user chose otherwise."""

import os
import subprocess
import sys

import pytest

from vi._cpu_devices import usable_cores


def _device_count(code: str, **env) -> str:
    """Runs ``code`` in a fresh interpreter; returns its last line of output."""
    ours = ("XLA_FLAGS", "VI_CPU_DEVICES")
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


LAPACK_FIT = """
import jax, jax.numpy as jnp, optax, vi
from jax.scipy.linalg import solve_triangular
chol = jnp.linalg.cholesky(jnp.stack([jnp.eye(10) * (k + 1.0) for k in range(4)]))
def logdensity(x):  # a batched triangular solve, as a mixture's log density might do
    z = jax.vmap(lambda c: solve_triangular(c, x, lower=True))(chol)
    return jax.nn.logsumexp(-0.5 * jnp.sum(z**2, axis=-1))
target = vi.from_logdensity(logdensity, jnp.zeros(10))
keys = jax.random.split(jax.random.key(0), 8)
result = vi.fit_batch(keys, target, method="stochastic", optimizer=optax.adam(1e-2),
                      max_steps=500, progress=False)
print(jax.local_device_count(), int(result.info.num_steps.min()))
"""


def test_a_batch_whose_log_density_calls_lapack_does_not_hang():
    # Sharded over four devices on a pool of two threads, this hung: each device's batched
    # solve_triangular waited for pool threads that were all waiting too. fit_batch runs
    # such a batch on one device.
    flags = "--xla_force_host_platform_device_count=4"
    assert _device_count(LAPACK_FIT, XLA_FLAGS=flags).startswith("4 500")


FIXED_DRAW_BATCH = """
import jax, jax.numpy as jnp, vi
target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(10))
result = vi.fit_batch(jax.random.split(jax.random.key(0), 512), target, progress=False)
print(jax.local_device_count(), set(result.stop_reasons))
"""


def test_a_large_fixed_draw_batch_over_every_core_does_not_hang():
    # The fixed-draw fit whitens its draws once per member. With jnp.linalg.qr, LAPACK split
    # the batch of 256 QRs per device over the pool that runs the devices, and the default
    # fit_batch (a device per core) hung every time on 2 cores.
    flags = "--xla_force_host_platform_device_count=2"
    assert _device_count(FIXED_DRAW_BATCH, XLA_FLAGS=flags).startswith("2 {'converged'}")

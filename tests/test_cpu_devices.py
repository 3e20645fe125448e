"""``vi.set_cpu_devices`` asks JAX for CPU devices when called; ``import vi`` changes nothing."""

import os
import subprocess
import sys

import pytest

import vi
from vi.devices import usable_cores


def _device_count(code: str, **env) -> str:
    """Runs ``code`` in a fresh interpreter on JAX's CPU backend; returns its last line of
    output, followed by the end of its stderr."""
    ours = ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")
    environ = {k: v for k, v in os.environ.items() if k not in ours}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 or "Error" in result.stderr, result.stderr[-2000:]
    return (result.stdout.strip().splitlines() or [""])[-1] + result.stderr[-500:]


COUNT = "print(jax.local_device_count())"


@pytest.mark.slow
def test_import_vi_changes_no_jax_setting():
    assert _device_count("import vi, jax; " + COUNT).startswith("1")


@pytest.mark.slow
def test_set_cpu_devices_gives_one_device_per_usable_core():
    code = "import vi, jax; n = vi.set_cpu_devices(); print(n, jax.local_device_count())"
    cores = usable_cores()
    assert _device_count(code).startswith(f"{cores} {cores}")


@pytest.mark.slow
def test_set_cpu_devices_gives_the_count_asked_for():
    code = "import vi, jax; n = vi.set_cpu_devices(3); print(n, jax.local_device_count())"
    assert _device_count(code).startswith("3 3")


@pytest.mark.parametrize(
    "env",
    [
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=5"},
        {"JAX_NUM_CPU_DEVICES": "5"},
    ],
)
@pytest.mark.slow
def test_a_count_chosen_in_the_environment_wins(env):
    code = "import vi, jax; n = vi.set_cpu_devices(3); print(n, jax.local_device_count())"
    assert _device_count(code, **env).startswith("5 5")


@pytest.mark.slow
def test_after_jax_started_a_new_count_raises():
    code = "import vi, jax; jax.numpy.ones(1); vi.set_cpu_devices(3)"
    out = _device_count(code)
    assert "RuntimeError: vi.set_cpu_devices(3) asks for 3 CPU device(s)" in out
    assert "already started with 1 CPU device(s)" in out
    assert "before any JAX computation" in out


@pytest.mark.slow
def test_after_jax_started_the_count_it_has_passes():
    started = "import vi, jax; jax.numpy.ones(1); print(vi.set_cpu_devices(1))"
    assert _device_count(started).startswith("1")
    twice = "import vi, jax; vi.set_cpu_devices(2); jax.numpy.ones(1); print(vi.set_cpu_devices(2))"
    assert _device_count(twice).startswith("2")


@pytest.mark.parametrize("n", [0, -1, 2.0, "2", True])
def test_a_bad_count_names_n(n):
    # Checked before anything else, so this runs here without touching JAX's set-up.
    with pytest.raises(ValueError, match=f"n must be a positive integer or None, got {n!r}"):
        vi.set_cpu_devices(n)


@pytest.mark.slow
def test_the_vi_program_uses_every_core_and_a_caller_of_main_keeps_its_own():
    program = "import jax, sys, vi.cli; sys.argv = ['vi', '--help']; vi.cli.main(); " + COUNT
    assert _device_count(program).startswith(str(usable_cores()))
    called = "import jax, vi.cli; vi.cli.main(['--help']); " + COUNT
    assert _device_count(called).startswith("1")


LAPACK_FIT = """
import jax, jax.numpy as jnp, optax, vi
from jax.scipy.linalg import solve_triangular
chol = jnp.linalg.cholesky(jnp.stack([jnp.eye(10) * (k + 1.0) for k in range(4)]))
def logdensity(x):  # a batched triangular solve, as a mixture's log density might do
    z = jax.vmap(lambda c: solve_triangular(c, x, lower=True))(chol)
    return jax.nn.logsumexp(-0.5 * jnp.sum(z**2, axis=-1))
target = vi.from_logdensity(logdensity, jnp.zeros(10))
keys = jax.random.split(jax.random.key(0), 8)
method = vi.Stochastic(optax.adam(1e-2), max_steps=500)
result = vi.fit_batch(keys, target, method=method, progress=False)
print(jax.local_device_count(), int(result.info.num_steps.min()))
"""


@pytest.mark.heavy
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


@pytest.mark.heavy
def test_a_large_fixed_draw_batch_over_every_core_does_not_hang():
    # The fixed-draw fit whitens its draws once per member. With jnp.linalg.qr, LAPACK split
    # the batch of 256 QRs per device over the pool that runs the devices, and the default
    # fit_batch (a device per core) hung every time on 2 cores.
    flags = "--xla_force_host_platform_device_count=2"
    assert _device_count(FIXED_DRAW_BATCH, XLA_FLAGS=flags).startswith("2 {'converged'}")

"""Shared fixtures: precision, fixed keys, fits forgotten between tests."""

import jax
import jax.numpy as jnp
import pytest

import vi
from vi.fitting import recompile

# Two CPU devices per test process, as on the 2-core CI host, so that sharded batch fits are
# tested sharded. Importing vi changes no JAX setting, and the count is fixed when JAX makes
# its first array, so this runs here, before any test module is imported.
vi.set_cpu_devices(2)


def pytest_collection_modifyitems(items):
    """A heavy test is slow too, so that ``-m "not slow"`` (the quick subset) leaves it out."""
    for item in items:
        if item.get_closest_marker("heavy") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fits_seen_by_this_test_only():
    """vi warns when a fit compiles again for new objects with the same code as an earlier
    fit's (warnings are errors here); which tests ran earlier in a worker must not matter."""
    recompile.forget()


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Runs the test once in float32 and once in float64 (x64 enabled only for the latter)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield jnp.float64
    else:
        yield jnp.float32


@pytest.fixture
def x64():
    """Enables 64-bit floats for the duration of one test."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng_key():
    return jax.random.key(0)

"""Shared fixtures: precision, fixed keys, fits forgotten between tests."""

import jax
import jax.numpy as jnp
import pytest

from vi.fitting import recompile


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

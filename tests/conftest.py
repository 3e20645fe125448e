"""Shared fixtures: precision, fixed keys, fits forgotten between tests; one compilation
cache for the test session."""

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import pytest

import vi
from vi.fitting import recompile

# Two CPU devices per test process, as on the 2-core CI host, so that sharded batch fits are
# tested sharded. Importing vi changes no JAX setting, and the count is fixed when JAX makes
# its first array, so this runs here, before any test module is imported.
vi.set_cpu_devices(2)


_CACHE = "JAX_COMPILATION_CACHE_DIR"
_made = {}  # config -> the cache folder this process made


def pytest_configure(config):
    """Compiled programs shared by the two workers and the subprocesses (the command-line
    tests) through JAX's persistent compilation cache, in a folder of this session's: the
    same program is compiled once per session, not once per process. The controller makes
    the folder and removes it at the end; the workers and subprocesses inherit its path."""
    if _CACHE not in os.environ:
        os.environ[_CACHE] = _made[config] = tempfile.mkdtemp(prefix="vi-tests-compiled-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )


def pytest_unconfigure(config):
    if made := _made.pop(config, None):
        shutil.rmtree(made, ignore_errors=True)
        del os.environ[_CACHE]


# Parametrisations run only with ``-m heavy``, for CI's 10-minute budget (measured:
# 595 s for the fresh-clone .ci/run with them). Each test keeps its other
# parametrisations in the default run: the same code, on other problems or dtypes.
HEAVY_PARAMETRISATIONS = {
    "tests/corpus/test_corpus.py::test_default_fit_reaches_the_stored_optimum[" + name + "]"
    for name in ("poisson_offset", "logistic_regression", "regression_uncentred")
} | {
    "tests/fitting/test_fit.py::test_default_fit_reaches_the_mean_field_optimum[float32-polynomial_21_terms]",
    "tests/fitting/test_fit.py::test_default_fit_reaches_the_mean_field_optimum[float32-uncentred_x4000]",
    "tests/fitting/test_fit.py::test_default_fit_reaches_the_mean_field_optimum[float64-regression]",
    "tests/fitting/test_fit.py::test_the_steps_taken_do_not_depend_on_how_they_fall_into_windows[float64]",
    "tests/fitting/test_forward_fit.py::test_forward_kl_from_exact_samples_matches_the_true_moments[mixture_10d]",
    "tests/fitting/test_methods.py::test_a_users_loop_over_init_and_step_gives_the_fit[fixed_draws]",
    "tests/objectives/test_elbo.py::test_moment_matched_draws_whiten_as_numpy_qr_does[float64-33-33]",
    "tests/objectives/test_elbo.py::test_moment_matched_draws_whiten_as_numpy_qr_does[float32-150-100]",
    "tests/test_backend.py::test_orthonormal_columns_match_numpys_qr_on_both_paths[shape2]",
}


def pytest_collection_modifyitems(items):
    """A heavy test is slow too, so that ``-m "not slow"`` (the quick subset) leaves it out;
    the parametrisations in ``HEAVY_PARAMETRISATIONS`` are heavy."""
    for item in items:
        if item.nodeid in HEAVY_PARAMETRISATIONS:
            item.add_marker(pytest.mark.heavy)
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

"""The bounded cache of compiled fits: new functions do not pile up, and vi says why."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi

METHOD = vi.Stochastic(max_steps=20)  # small programs: this is about their count


@pytest.fixture
def cache_of(request):
    """Sets the cache's bound for one test, then puts the default back."""
    before = vi.set_cache_size(request.param)
    vi.clear_caches()
    yield request.param
    vi.set_cache_size(before)


def _target(data):
    """A new function over ``data`` at every call, as in a user's loop over datasets."""
    return vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - data) ** 2), jnp.zeros(3))


@pytest.mark.parametrize("cache_of", [1], indirect=True)
@pytest.mark.slow
@pytest.mark.heavy
def test_a_new_lambda_over_new_data_warns_and_old_programs_go_with_their_data(cache_of):
    alive = []
    for i in range(3):
        data = jnp.full((3,), float(i))
        alive.append(weakref.ref(data))
        if i == 0:
            result = vi.fit(jax.random.key(0), _target(data), method=METHOD)
        else:  # the same code over new data of the same shape: compiles again, and says so
            with pytest.warns(UserWarning, match=r"jax\.tree_util\.Partial\(fn, data\)"):
                result = vi.fit(jax.random.key(0), _target(data), method=METHOD)
        assert np.all(np.isfinite(result.params.loc))
        del data, result
    gc.collect()
    # Past the bound of one program, the earlier programs and the data they held are gone
    # (the recompile warning remembers hashes, not functions).
    assert [ref() is not None for ref in alive] == [False, False, True]
    info = vi.cache_info()
    assert (info.misses, info.hits, info.maxsize, info.currsize) == (3, 0, 1, 1)


@pytest.mark.parametrize("cache_of", [4], indirect=True)
@pytest.mark.slow
@pytest.mark.heavy
def test_the_same_function_hits_and_a_cleared_cache_gives_the_same_fit(cache_of):
    target = _target(jnp.ones(3))
    first = vi.fit(jax.random.key(0), target, method=METHOD)
    again = vi.fit(jax.random.key(0), target, method=METHOD)
    assert vi.cache_info()[:2] == (1, 1)
    vi.clear_caches()
    assert vi.cache_info() == (0, 0, 4, 0)
    fresh = vi.fit(jax.random.key(0), target, method=METHOD)
    for other in (again, fresh):
        np.testing.assert_array_equal(first.params.loc, other.params.loc)
        np.testing.assert_array_equal(first.params.log_scale, other.params.log_scale)


@pytest.mark.parametrize("cache_of", [0], indirect=True)
@pytest.mark.slow
def test_with_no_programs_kept_a_fit_keeps_nothing_of_its_target_alive(cache_of):
    """Neither the cache (bound 0) nor the recompile warning's memory holds the function."""
    data = jnp.full((3,), 2.0)
    alive = weakref.ref(data)
    result = vi.fit(jax.random.key(0), _target(data), method=METHOD)
    assert result.num_steps == 20 and np.all(np.isfinite(result.params.loc))
    del data, result
    gc.collect()
    assert alive() is None


@pytest.mark.slow
def test_data_passed_as_an_argument_compiles_once_and_does_not_warn():
    def fn(data, x):
        return -0.5 * jnp.sum((x - data) ** 2)

    vi.clear_caches()
    locs = []
    for value in (1.0, 2.0, 3.0):
        target = vi.from_logdensity(jax.tree_util.Partial(fn, jnp.full((3,), value)), jnp.zeros(3))
        locs.append(vi.fit(jax.random.key(0), target, method=METHOD).params.loc)
    assert vi.cache_info()[:2] == (2, 1)
    # The same start and key: each fit moved toward its own data, further for larger.
    assert np.all(0 < locs[0]) and np.all(locs[0] < locs[1]) and np.all(locs[1] < locs[2])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "32", None])
def test_the_bound_must_be_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match=rf"maxsize must be a non-negative integer, got {bad!r}"):
        vi.set_cache_size(bad)

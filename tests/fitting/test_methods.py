"""Methods and objectives as values: their ``init`` / ``step``, and the drivers over them."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vi
from vi.fitting.fit import _fit_compiled
from vi.targets.mixture import bimodal_2d

SWEEP_ADAM = optax.inject_hyperparams(optax.adam)
OVERFLOWING_SGD = optax.sgd(1e38)  # finite gradients, parameters that overflow float32

METHODS = {
    "stochastic_300_steps": vi.Stochastic(stopping=None, max_steps=300),
    "stochastic_stopping": vi.Stochastic(),
    "fixed_draws": vi.FixedDraws(),
}


def _logdensity(x):
    return -0.5 * jnp.sum(((x - 1.0) / jnp.asarray([0.5, 1.0, 2.0])) ** 2)


def _gaussian():
    """N((1, 1, 1), diag(0.5, 1, 2)^2): q's optimum is p itself."""
    return vi.from_logdensity(_logdensity, jnp.zeros(3))


def _own_loop(rng_key, target, method, objective=None):
    """What ``vi.fit(rng_key, target, method=method)`` is documented to run, as a user
    would write it: ``(final state, the steps' objective values)``."""
    init_key, step_key, _, _ = jax.random.split(rng_key, 4)
    state = method.init(init_key, target, objective=objective)
    step = jax.jit(method.step)
    values = []
    while int(state.status) == 0:
        state, info = step(jax.random.fold_in(step_key, len(values)), state)
        values.append(info.objective)
    return state, jnp.stack(values)


def _assert_close(got, want, tol=1e-6, *, rtol=None):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=tol if rtol is None else rtol, atol=tol)


def _assert_same(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


# A user's loop over init and step computes what vi.fit computes.


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.slow
def test_a_users_loop_over_init_and_step_gives_the_fit(name):
    method, target = METHODS[name], _gaussian()
    result = vi.fit(jax.random.key(0), target, method=method)
    state, values = _own_loop(jax.random.key(0), target, method)
    assert result.num_steps == int(state.step) == len(values)
    assert int(result.info.status) == int(state.status)
    _assert_close(result.params, state.params)
    np.testing.assert_allclose(result.trace, values, rtol=1e-6, atol=1e-6)
    if name != "stochastic_300_steps":
        assert result.stop_reason == "converged"
        np.testing.assert_allclose(result.params.loc, 1.0, atol=0.05)


@pytest.mark.heavy
def test_a_users_loop_gives_the_forward_kl_fit_of_a_target_it_can_sample():
    target, objective = bimodal_2d(), vi.ForwardKL(vi.Exact())
    result = vi.fit(jax.random.key(0), target, objective=objective)
    state, values = _own_loop(jax.random.key(0), target, vi.Stochastic(), objective)
    assert result.stop_reason == "converged"
    assert result.num_steps == int(state.step) == len(values)
    _assert_close(result.params, state.params)
    np.testing.assert_allclose(result.trace, values, rtol=1e-6, atol=1e-6)
    # The forward KL's optimum matches p's moments.
    np.testing.assert_allclose(result.params.loc, target.truth.mean, atol=0.1)


@pytest.mark.parametrize(
    "name", ["stochastic_stopping", pytest.param("fixed_draws", marks=pytest.mark.heavy)]
)
@pytest.mark.slow
def test_step_under_vmap_equals_each_members_step(name):
    # Over the window ends of the stopping rule (250 steps) and the members' stops.
    method, target = METHODS[name], _gaussian()
    keys = jax.random.split(jax.random.key(0), 3)
    step_keys = jax.vmap(lambda k: jax.random.split(k, 4)[1])(keys)
    states = jax.vmap(lambda k: method.init(k, target))(keys)
    singles = [method.init(k, target) for k in keys]
    vmapped_step, step = jax.jit(jax.vmap(method.step)), jax.jit(method.step)
    fold_in = jax.vmap(jax.random.fold_in, (0, None))
    for i in range(260 if isinstance(method, vi.Stochastic) else 30):
        states, infos = vmapped_step(fold_in(step_keys, i), states)
        for b in range(3):
            singles[b], info = step(jax.random.fold_in(step_keys[b], i), singles[b])
            _assert_close(jax.tree.map(lambda x, b=b: x[b], infos), info)
    for b in range(3):
        member = jax.tree.map(lambda x, b=b: x[b], states)
        assert int(member.step) == int(singles[b].step)
        assert int(member.status) == int(singles[b].status)
        _assert_close(member.params, singles[b].params)
        if isinstance(method, vi.Stochastic):
            # The window's sums of gradients: rounding over 250 steps. (At a fixed-draw
            # optimum, L-BFGS's memory and stall count are rounding alone.)
            _assert_close(member, singles[b], rtol=1e-4)
    if isinstance(method, vi.FixedDraws):
        assert np.all(np.asarray(states.status) == 1)  # every member stopped on the way


# Methods and objectives are values.


@pytest.mark.heavy
def test_equal_methods_share_one_compilation():
    target, key = _gaussian(), jax.random.key(0)
    for make, other in [
        (lambda: vi.Stochastic(max_steps=500), vi.Stochastic(max_steps=501)),
        (lambda: vi.FixedDraws(tol=1e-3), vi.FixedDraws(tol=2e-3)),
    ]:
        vi.fit(key, target, method=make())
        size = _fit_compiled._cache_size()
        vi.fit(jax.random.key(1), target, method=make())  # made again: an equal value
        assert _fit_compiled._cache_size() == size
        vi.fit(key, target, method=other)  # a field differs: another program
        assert _fit_compiled._cache_size() == size + 1
    vi.fit(key, target, objective=vi.ForwardKL(vi.SNIS(min_ess_fraction=0.01)))
    size = _fit_compiled._cache_size()
    vi.fit(key, target, objective=vi.ForwardKL(vi.SNIS(min_ess_fraction=0.01)))
    assert _fit_compiled._cache_size() == size


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (vi.Stochastic(), "max_steps"),
        (vi.FixedDraws(), "tol"),
        (vi.Stopping(), "decay"),
        (vi.ForwardKL(), "estimator"),
        (vi.SNIS(), "min_ess_fraction"),
        (vi.Draws(np.zeros((4, 2))), "draws"),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, str) else x,
)
def test_methods_and_objectives_are_frozen(value, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, 1)


def test_equal_options_make_equal_values():
    for make in [
        vi.Stochastic,
        lambda: vi.Stochastic(num_samples=4, stopping=vi.Stopping(check_every=100)),
        lambda: vi.FixedDraws(num_draws=8, tol=1e-3),
        vi.Stopping,
        vi.ReverseKL,
        lambda: vi.ForwardKL(vi.Exact()),
        lambda: vi.ForwardKL(vi.SNIS(min_ess_fraction=0.1)),
    ]:
        assert make() == make() and hash(make()) == hash(make())
    assert vi.FixedDraws(num_draws=8) != vi.FixedDraws(num_draws=10)
    assert vi.ForwardKL(vi.Exact()) != vi.ForwardKL(vi.SNIS())
    adam = optax.adam(1e-2)
    assert vi.Stochastic(adam) == vi.Stochastic(adam)
    # optax optimizers compare by identity: one made again is another program.
    assert vi.Stochastic(optax.adam(1e-2)) != vi.Stochastic(optax.adam(1e-2))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: vi.Stochastic(num_samples=0), ValueError, "num_samples must be an integer >= 1"),
        (lambda: vi.Stochastic(max_steps=0), ValueError, "max_steps must be an integer >= 1"),
        (lambda: vi.Stochastic(optax.adam), TypeError, r"call it, e\.g\. optax\.adam\(1e-2\)"),
        (lambda: vi.Stochastic(stopping="auto"), TypeError, "stopping must be vi.Stopping"),
        (lambda: vi.FixedDraws(num_draws=3), ValueError, "num_draws must be an even integer"),
        (lambda: vi.FixedDraws(max_steps=0), ValueError, "max_steps must be an integer >= 1"),
        (lambda: vi.FixedDraws(tol=0.0), ValueError, "tol must be positive"),
        (lambda: vi.Stopping(decay=2), ValueError, r"decay must be in \(0, 1\)"),
        (lambda: vi.Stopping(check_every=1), ValueError, "check_every must be an integer >= 2"),
        (lambda: vi.Stopping(num_decays=-1), ValueError, "num_decays must be an integer >= 0"),
        (lambda: vi.Stopping(gap_tol=0.0), ValueError, "gap_tol must be positive nats"),
        (lambda: vi.Stopping(gap_draws=6), ValueError, "gap_draws must be a multiple of 4"),
        (lambda: vi.SNIS(widen=0.5), ValueError, "widen must be >= 1"),
        (lambda: vi.ForwardKL("exact"), TypeError, r"takes vi\.Exact\(\), vi\.Draws"),
    ],
)
def test_a_bad_option_is_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_combination_that_cannot_run_is_named():
    target, key = _gaussian(), jax.random.key(0)
    with pytest.raises(TypeError, match=r"vi\.FixedDraws\(\) fits vi\.ReverseKL\(\) only"):
        vi.fit(key, target, method=vi.FixedDraws(), objective=vi.ForwardKL())
    with pytest.raises(TypeError, match=r"vi\.FixedDraws\(\) fits vi\.ReverseKL\(\) only"):
        vi.FixedDraws().init(key, target, objective=vi.ForwardKL())
    with pytest.raises(ValueError, match=r"stick_the_landing=True\) cannot fit vi\.ForwardKL"):
        vi.fit(
            key,
            bimodal_2d(),
            method=vi.Stochastic(stick_the_landing=True),
            objective=vi.ForwardKL(vi.Exact()),
        )
    with pytest.raises(TypeError, match=r"objective must be vi\.ReverseKL\(\).*'reverse_kl'"):
        vi.fit(key, target, objective="reverse_kl")
    with pytest.raises(TypeError, match=r"the class ReverseKL: call it, vi\.ReverseKL\(\)"):
        vi.fit(key, target, objective=vi.ReverseKL)
    with pytest.raises(TypeError, match=r"method must be vi\.FixedDraws.*'stochastic'"):
        vi.fit(key, target, method="stochastic")


# A stopped state stays as it is.


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        (METHODS["stochastic_300_steps"], "max_steps"),
        (METHODS["stochastic_stopping"], "converged"),
        pytest.param(METHODS["fixed_draws"], "converged", marks=pytest.mark.heavy),
        (vi.Stochastic(OVERFLOWING_SGD, max_steps=400), "nonfinite"),
    ],
    ids=[*METHODS, "stochastic_nonfinite"],
)
@pytest.mark.slow
def test_a_stopped_state_does_not_change(method, reason):
    state, _ = _own_loop(jax.random.key(0), _gaussian(), method)
    assert vi.fitting.STATUS_NAMES[int(state.status)] == reason
    step = jax.jit(method.step)
    for i in range(3):
        new, info = step(jax.random.key(100 + i), state)
        _assert_same(new, state)
        assert bool(jnp.isnan(info.objective))


# The drivers: fit_batch, the generic path, hyperparameters.


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("stochastic_stopping", marks=pytest.mark.heavy),
        "fixed_draws",
        pytest.param("forward_kl", marks=pytest.mark.heavy),
    ],
)
@pytest.mark.slow
def test_a_batch_member_is_the_fit_of_its_key(name):
    # Three keys on two devices: shares of 2 and 1 (padded).
    if name == "forward_kl":
        target, options = bimodal_2d(), dict(objective=vi.ForwardKL(vi.Exact()))
    else:
        target, options = _gaussian(), dict(method=METHODS[name], init_radius=1.0)
    keys = jax.random.split(jax.random.key(0), 3)
    batch = vi.fit_batch(keys, target, **options)
    for i in range(3):
        single = vi.fit(keys[i], target, **options)
        assert batch[i].num_steps == single.num_steps
        assert batch[i].stop_reason == single.stop_reason
        _assert_close(batch[i].params, single.params)
        np.testing.assert_allclose(batch[i].info.elbo, single.info.elbo, rtol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="compares the CPU path with the plain")
@pytest.mark.parametrize(
    "name", [pytest.param("stochastic_stopping", marks=pytest.mark.heavy), "fixed_draws"]
)
@pytest.mark.slow
def test_the_generic_path_fits_as_the_cpu_path_does(name):
    # Stochastic steps draw the same jax.random numbers on both paths, in blocks of steps on
    # the CPU path and in one scan on the other: the same fit up to rounding. The fixed
    # draws are other numbers on the two paths, each whitened exactly (Gram-Schmidt on the
    # CPU path, QR on the other): on a Gaussian target both reach the exact optimum.
    method, target = METHODS[name], _gaussian()
    cpu = vi.fit(jax.random.key(0), target, method=method)
    with vi.backend.generic():
        assert not vi.backend.cpu_path()
        plain = vi.fit(jax.random.key(0), target, method=method)
    assert plain.stop_reason == cpu.stop_reason
    if isinstance(method, vi.FixedDraws):
        _assert_close(plain.params, cpu.params, tol=1e-5)
        np.testing.assert_allclose(plain.params.loc, 1.0, atol=1e-4)
    else:
        assert plain.num_steps == cpu.num_steps
        _assert_close(plain.params, cpu.params)
        np.testing.assert_allclose(plain.trace, cpu.trace, rtol=1e-6)


@pytest.mark.slow
def test_a_sweep_over_learning_rates_sets_each_members_rate():
    target = _gaussian()
    rates = jnp.asarray([3e-3, 3e-2])
    options = dict(max_steps=300, stopping=None)
    keys = jax.random.split(jax.random.key(0), 1)[jnp.asarray([0, 0])]  # one key twice
    batch = vi.fit_batch(
        keys,
        target,
        method=vi.Stochastic(SWEEP_ADAM(learning_rate=1e-2), **options),
        hyperparameters={"learning_rate": rates},
    )
    assert np.max(np.abs(np.asarray(batch.params.loc[0] - batch.params.loc[1]))) > 0.1
    for i in range(2):
        method = vi.Stochastic(SWEEP_ADAM(learning_rate=float(rates[i])), **options)
        _assert_close(batch[i].params, vi.fit(keys[i], target, method=method).params)


def test_a_hyperparameter_the_optimizer_does_not_have_is_named():
    target = _gaussian()
    keys = jax.random.split(jax.random.key(0), 2)
    rates = jnp.asarray([1e-2, 2e-2])
    with pytest.raises(ValueError, match=r"no 'lr'.*optax\.inject_hyperparams"):
        method = vi.Stochastic(SWEEP_ADAM(learning_rate=1e-2))
        vi.fit_batch(keys, target, method=method, hyperparameters={"lr": rates})
    with pytest.raises(ValueError, match=r"no 'learning_rate'.*optax\.inject_hyperparams"):
        method = vi.Stochastic(optax.adam(1e-2))  # not built with inject_hyperparams
        vi.fit_batch(keys, target, method=method, hyperparameters={"learning_rate": rates})


def test_hyperparameters_need_a_stochastic_method():
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(TypeError, match=r"give method=vi\.Stochastic\(optimizer=\.\.\.\).*Fixed"):
        vi.fit_batch(
            keys,
            _gaussian(),
            method=vi.FixedDraws(),
            hyperparameters={"learning_rate": jnp.asarray([1e-2, 2e-2])},
        )

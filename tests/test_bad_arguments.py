"""A catalogue of bad arguments to the library's API: each raises its exact error type with a
message that names the argument (the configs' catalogue is tests/experiments/test_config_errors.py).

Each case is ``(call, error type, fragments)``: the call must raise exactly that type (not
a subclass, not an error from inside JAX), and every fragment must be in its message.
``DOCUMENTED`` holds odd but valid inputs whose result the docs state, checked to be that.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

import vi

KEY = jax.random.key(0)
KEYS = jax.random.split(KEY, 3)
FAST = vi.Stochastic(max_steps=20)
UNIFORM = jnp.ones(3) / 3


def _target(dim=2):
    return vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(dim))


def _model(y=None):
    m = numpyro.sample("m", dist.Normal())
    numpyro.sample("y", dist.Normal(m, 1.0), obs=y)


def _injected():
    return vi.Stochastic(optimizer=optax.inject_hyperparams(optax.adam)(1e-2), max_steps=20)


_RESULT = []


def _result():
    """One small fit, made once, for the cases about a fit's result."""
    if not _RESULT:
        _RESULT.append(vi.fit(KEY, _target(), method=FAST))
    return _RESULT[0]


def _fit(**kwargs):
    return lambda: vi.fit(KEY, _target(), **kwargs)


def _params(loc, log_scale):
    return vi.MeanFieldParams(loc, log_scale)


CASES = {
    # vi.fit: the key, the target, the method and objective as values
    "fit-key-int": (lambda: vi.fit(0, _target()), TypeError, ["rng_key", "got int"]),
    "fit-key-batch": (lambda: vi.fit(KEYS, _target()), TypeError, ["rng_key", "shape (3,)"]),
    "fit-target-function": (lambda: vi.fit(KEY, lambda x: x), TypeError, ["target", "function"]),
    "fit-target-none": (lambda: vi.fit(KEY, None), TypeError, ["target", "NoneType"]),
    "fit-method-string": (_fit(method="adam"), TypeError, ["method", "'adam'"]),
    "fit-method-class": (_fit(method=vi.Stochastic), TypeError, ["method", "vi.Stochastic()"]),
    "fit-method-optax": (_fit(method=optax.adam(1e-2)), TypeError, ["method", "Gradient"]),
    "fit-objective-string": (_fit(objective="kl"), TypeError, ["objective", "'kl'"]),
    "fit-objective-class": (_fit(objective=vi.ReverseKL), TypeError, ["vi.ReverseKL()"]),
    "fit-unknown-keyword": (_fit(steps=10), TypeError, ["steps"]),
    # vi.fit: where q starts
    "init-params-tuple": (
        _fit(init_params=(jnp.zeros(2), jnp.zeros(2))),
        TypeError,
        ["init_params", "got tuple"],
    ),
    "init-params-dict": (_fit(init_params={"loc": jnp.zeros(2)}), TypeError, ["init_params"]),
    "init-params-scalar-scale": (
        _fit(init_params=_params(jnp.zeros(2), 0.0)),
        ValueError,
        ["init_params.log_scale", "shape ()", "expected (2,)"],
    ),
    "init-params-wrong-length": (
        _fit(init_params=_params(jnp.zeros(3), jnp.zeros(3))),
        ValueError,
        ["init_params.loc", "(3,)", "dimension 2"],
    ),
    "init-params-int32": (
        _fit(init_params=_params(jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32))),
        TypeError,
        ["init_params.loc", "floating", "int32"],
    ),
    "init-params-nan": (
        _fit(init_params=_params(jnp.array([0.0, jnp.nan]), jnp.zeros(2))),
        ValueError,
        ["init_params.loc[1]", "not finite"],
    ),
    "init-params-and-radius": (
        _fit(init_params=_params(jnp.zeros(2), jnp.zeros(2)), init_radius=1.0),
        ValueError,
        ["init_params or init_radius"],
    ),
    "init-radius-inf": (_fit(init_radius=float("inf")), ValueError, ["init_radius", "inf"]),
    "init-radius-negative": (_fit(init_radius=-1.0), ValueError, ["init_radius", "-1.0"]),
    "init-radius-nan": (_fit(init_radius=float("nan")), ValueError, ["init_radius", "nan"]),
    "init-scale-zero": (_fit(init_scale=0.0), ValueError, ["init_scale", "0.0"]),
    "init-scale-negative": (_fit(init_scale=-1.0), ValueError, ["init_scale", "-1.0"]),
    "init-scale-nan": (_fit(init_scale=float("nan")), ValueError, ["init_scale", "nan"]),
    "init-scale-string": (_fit(init_scale="big"), TypeError, ["init_scale", "'big'"]),
    "eval-samples-one": (_fit(num_eval_samples=1), ValueError, ["num_eval_samples", "got 1"]),
    "eval-samples-zero": (_fit(num_eval_samples=0), ValueError, ["num_eval_samples", "got 0"]),
    "eval-samples-float": (_fit(num_eval_samples=10.5), TypeError, ["num_eval_samples", "10.5"]),
    "progress-string": (_fit(progress="yes"), TypeError, ["progress", "'yes'"]),
    # families
    "family-string": (_fit(family="full_rank"), TypeError, ["family", "got str"]),
    "family-class": (_fit(family=vi.FullRank), TypeError, ["family", "vi.FullRank()"]),
    "low-rank-zero": (lambda: vi.LowRank(0), ValueError, ["rank", "got 0"]),
    "low-rank-not-below-dimension": (
        _fit(family=vi.LowRank(5)),
        ValueError,
        ["vi.LowRank(5)", "dimension 2", "vi.FullRank()"],
    ),
    # methods
    "stochastic-max-steps-zero": (
        lambda: vi.Stochastic(max_steps=0),
        ValueError,
        ["max_steps", "got 0"],
    ),
    "stochastic-max-steps-float": (
        lambda: vi.Stochastic(max_steps=10.5),
        ValueError,
        ["max_steps", "10.5"],
    ),
    "stochastic-num-samples-zero": (
        lambda: vi.Stochastic(num_samples=0),
        ValueError,
        ["num_samples", "got 0"],
    ),
    "stochastic-num-samples-negative": (
        lambda: vi.Stochastic(num_samples=-3),
        ValueError,
        ["num_samples", "-3"],
    ),
    "stochastic-optimizer-string": (
        lambda: vi.Stochastic(optimizer="adam"),
        TypeError,
        ["optimizer", "got str"],
    ),
    "stochastic-optimizer-factory": (
        lambda: vi.Stochastic(optimizer=optax.adam),
        TypeError,
        ["optimizer", "optax.adam(1e-2)"],
    ),
    "stochastic-stopping-dict": (
        lambda: vi.Stochastic(stopping={"gap_tol": 1e-3}),
        TypeError,
        ["stopping", "vi.Stopping"],
    ),
    "stopping-gap-tol-negative": (
        lambda: vi.Stopping(gap_tol=-1.0),
        ValueError,
        ["gap_tol", "-1.0"],
    ),
    "stopping-decay-one": (lambda: vi.Stopping(decay=1.0), ValueError, ["decay", "(0, 1)"]),
    "stopping-check-every-zero": (
        lambda: vi.Stopping(check_every=0),
        ValueError,
        ["check_every"],
    ),
    "stopping-num-decays-negative": (
        lambda: vi.Stopping(num_decays=-1),
        ValueError,
        ["num_decays"],
    ),
    "stopping-gap-draws-odd": (lambda: vi.Stopping(gap_draws=7), ValueError, ["gap_draws"]),
    "fixed-draws-max-steps-zero": (
        lambda: vi.FixedDraws(max_steps=0),
        ValueError,
        ["max_steps", "got 0"],
    ),
    "fixed-draws-num-draws-one": (
        lambda: vi.FixedDraws(num_draws=1),
        ValueError,
        ["num_draws", "even"],
    ),
    "fixed-draws-num-draws-zero": (
        lambda: vi.FixedDraws(num_draws=0),
        ValueError,
        ["num_draws", "got 0"],
    ),
    "fixed-draws-tol-negative": (lambda: vi.FixedDraws(tol=-1.0), ValueError, ["tol", "-1.0"]),
    "fixed-draws-tol-nan": (lambda: vi.FixedDraws(tol=float("nan")), ValueError, ["tol", "nan"]),
    "fixed-draws-forward-kl": (
        _fit(method=vi.FixedDraws(), objective=vi.ForwardKL(vi.Draws(jnp.zeros((10, 2))))),
        TypeError,
        ["vi.FixedDraws()", "vi.ReverseKL() only", "vi.Stochastic"],
    ),
    # objectives
    "forward-kl-string": (lambda: vi.ForwardKL("mcmc"), TypeError, ["estimator", "got str"]),
    "forward-kl-exact-without-sampler": (
        _fit(objective=vi.ForwardKL(vi.Exact())),
        ValueError,
        ["vi.Exact()", "sample_fn is None"],
    ),
    "draws-one-dimensional": (
        _fit(objective=vi.ForwardKL(vi.Draws(jnp.zeros(10)))),
        ValueError,
        ["draws must have shape (N, 2)", "got (10,)"],
    ),
    "draws-wrong-dimension": (
        _fit(objective=vi.ForwardKL(vi.Draws(jnp.zeros((10, 3))))),
        ValueError,
        ["draws must have shape (N, 2)", "got (10, 3)"],
    ),
    "draws-one-draw": (
        _fit(objective=vi.ForwardKL(vi.Draws(jnp.zeros((1, 2))))),
        ValueError,
        ["N >= 2", "got (1, 2)"],
    ),
    "draws-nan": (
        _fit(objective=vi.ForwardKL(vi.Draws(jnp.zeros((10, 2)).at[3, 0].set(jnp.nan)))),
        ValueError,
        ["draws[3] is not finite"],
    ),
    "snis-min-ess-two": (
        lambda: vi.SNIS(min_ess_fraction=2.0),
        ValueError,
        ["min_ess_fraction", "2.0"],
    ),
    "snis-defensive-one": (
        lambda: vi.SNIS(defensive_weight=1.0),
        ValueError,
        ["defensive_weight", "1.0"],
    ),
    "snis-widen-half": (lambda: vi.SNIS(widen=0.5), ValueError, ["widen", "0.5"]),
    "renyi-alpha-nan": (lambda: vi.Renyi(float("nan")), ValueError, ["alpha", "nan"]),
    "renyi-alpha-string": (lambda: vi.Renyi("half"), ValueError, ["alpha", "'half'"]),
    "renyi-particles-zero": (
        lambda: vi.Renyi(0.5, num_particles=0),
        ValueError,
        ["num_particles", "got 0"],
    ),
    "renyi-negative-alpha-snis": (
        lambda: vi.Renyi(-1.0, estimator=vi.SNIS()),
        TypeError,
        ["estimator", "SNIS", "collapse"],
    ),
    "importance-weighted-particles-zero": (
        lambda: vi.ImportanceWeighted(num_particles=0),
        ValueError,
        ["num_particles", "got 0"],
    ),
    "importance-weighted-particles-float": (
        lambda: vi.ImportanceWeighted(num_particles=1.5),
        ValueError,
        ["num_particles", "1.5"],
    ),
    # vi.fit_batch
    "batch-zero-keys": (
        lambda: vi.fit_batch(jax.random.split(KEY, 0), _target()),
        ValueError,
        ["rng_keys is empty"],
    ),
    "batch-one-key": (lambda: vi.fit_batch(KEY, _target()), TypeError, ["rng_keys", "split"]),
    "batch-integer-keys": (
        lambda: vi.fit_batch(np.arange(3), _target()),
        TypeError,
        ["rng_keys"],
    ),
    "batch-hyperparameter-length": (
        lambda: vi.fit_batch(
            KEYS, _target(), method=_injected(), hyperparameters={"learning_rate": jnp.ones(2)}
        ),
        ValueError,
        ["hyperparameters['learning_rate']", "leading axis of 3", "(2,)"],
    ),
    "batch-hyperparameter-unknown": (
        lambda: vi.fit_batch(
            KEYS, _target(), method=_injected(), hyperparameters={"lr": jnp.ones(3)}
        ),
        ValueError,
        ["hyperparameters['lr']", "no 'lr'"],
    ),
    "batch-hyperparameter-not-injected": (
        lambda: vi.fit_batch(
            KEYS, _target(), method=FAST, hyperparameters={"learning_rate": jnp.ones(3)}
        ),
        ValueError,
        ["hyperparameters['learning_rate']", "inject_hyperparams"],
    ),
    "batch-target-not-batched": (
        lambda: vi.fit_batch(KEYS, _target(), batched_target=True),
        ValueError,
        ["target.init_position", "(3, D)", "got (2,)"],
    ),
    "batch-chunk-zero": (
        lambda: vi.fit_batch(KEYS, _target(), chunk_size=0),
        ValueError,
        ["chunk_size", "got 0"],
    ),
    "batch-chunk-float": (
        lambda: vi.fit_batch(KEYS, _target(), chunk_size=1.5),
        ValueError,
        ["chunk_size", "1.5"],
    ),
    "batch-devices-empty": (
        lambda: vi.fit_batch(KEYS, _target(), devices=[]),
        TypeError,
        ["devices", "got []"],
    ),
    "batch-devices-string": (
        lambda: vi.fit_batch(KEYS, _target(), devices="gpu"),
        TypeError,
        ["devices", "jax.devices('cpu')"],
    ),
    "batch-init-params-unbatched": (
        lambda: vi.fit_batch(KEYS, _target(), init_params=_params(jnp.zeros(2), jnp.zeros(2))),
        ValueError,
        ["init_params.loc", "(2,)", "expected (3, 2)"],
    ),
    # a fit's result, diagnostics
    "sample-negative": (lambda: _result().sample(KEY, -1), ValueError, ["num_samples", "-1"]),
    "sample-zero": (lambda: _result().sample(KEY, 0), ValueError, ["num_samples", "got 0"]),
    "sample-float": (lambda: _result().sample(KEY, 2.5), ValueError, ["num_samples", "2.5"]),
    "sample-integer-key": (lambda: _result().sample(0, 10), TypeError, ["rng_key", "got int"]),
    "diagnose-wrong-dimension": (
        lambda: vi.diagnose(KEY, _target(), _params(jnp.zeros(3), jnp.zeros(3))),
        ValueError,
        ["params.loc has shape (3,)", "dimension 2"],
    ),
    "diagnose-one-sample": (
        lambda: vi.diagnose(KEY, _target(), _result(), num_samples=1),
        ValueError,
        ["num_samples", "got 1"],
    ),
    "diagnose-not-params": (
        lambda: vi.diagnose(KEY, _target(), "fit"),
        TypeError,
        ["params", "got str"],
    ),
    "diagnose-draws-wrong-dimension": (
        lambda: vi.diagnose(KEY, _target(), _result(), draws=jnp.zeros((10, 3))),
        ValueError,
        ["draws must have shape (N, 2)", "(10, 3)"],
    ),
    "psis-too-few-draws": (
        lambda: vi.psis(KEY, _target(), _result(), num_draws=20),
        ValueError,
        ["num_draws", "got 20"],
    ),
    "psis-not-params": (lambda: vi.psis(KEY, _target(), [1, 2]), TypeError, ["got list"]),
    # discrete KL kernels
    "kl-base-string": (
        lambda: vi.kl_divergence(UNIFORM, UNIFORM, base="2"),
        TypeError,
        ["base", "'2'"],
    ),
    "kl-base-one": (
        lambda: vi.kl_divergence(UNIFORM, UNIFORM, base=1.0),
        ValueError,
        ["base", "other than 1"],
    ),
    "kl-base-negative": (
        lambda: vi.kl_divergence(UNIFORM, UNIFORM, base=-2.0),
        ValueError,
        ["base", "-2.0"],
    ),
    "kl-shapes": (
        lambda: vi.kl_divergence(UNIFORM, jnp.ones(4) / 4),
        ValueError,
        ["p has shape (3,)", "q has shape (4,)"],
    ),
    "kl-axis-out-of-range": (
        lambda: vi.kl_divergence(UNIFORM, UNIFORM, axis=2),
        ValueError,
        ["axis 2", "out of range"],
    ),
    "kl-axis-float": (
        lambda: vi.kl_divergence(UNIFORM, UNIFORM, axis=0.5),
        TypeError,
        ["axis", "0.5"],
    ),
    "kl-string-input": (lambda: vi.kl_divergence("abc", UNIFORM), TypeError, ["p", "got str"]),
    "kl-complex-input": (
        lambda: vi.kl_divergence(jnp.ones(3, jnp.complex64), UNIFORM),
        TypeError,
        ["p", "complex64"],
    ),
    "kl-negative-validated": (
        lambda: vi.kl_divergence(jnp.array([-0.5, 1.5]), jnp.array([0.5, 0.5]), validate=True),
        ValueError,
        ["p[0] = -0.5", "negative"],
    ),
    "entropy-base-zero": (lambda: vi.entropy(UNIFORM, base=0.0), ValueError, ["base", "0.0"]),
    "entropy-axis-out-of-range": (
        lambda: vi.entropy(UNIFORM, axis=-3),
        ValueError,
        ["axis -3", "out of range"],
    ),
    "js-shapes": (
        lambda: vi.js_divergence(jnp.ones((2, 3)) / 3, jnp.ones((3, 2)) / 2),
        ValueError,
        ["(2, 3)", "(3, 2)"],
    ),
    "cross-entropy-shapes": (
        lambda: vi.cross_entropy(UNIFORM, jnp.ones(5) / 5),
        ValueError,
        ["(3,)", "(5,)"],
    ),
    "logits-shapes": (
        lambda: vi.kl_divergence_from_logits(jnp.zeros(3), jnp.zeros(4)),
        ValueError,
        ["logits_p", "logits_q"],
    ),
    # Gaussian KL registry
    "gaussian-kl-unregistered": (
        lambda: vi.kl(vi.Normal(jnp.zeros(1), jnp.ones(1)), "normal"),
        NotImplementedError,
        ["(Normal, str)", "register_kl"],
    ),
    "gaussian-kl-dimensions": (
        lambda: vi.kl(
            vi.DiagNormal(jnp.zeros(2), jnp.zeros(2)), vi.DiagNormal(jnp.zeros(3), jnp.zeros(3))
        ),
        ValueError,
        ["loc_q: (2,)", "loc_p: (3,)"],
    ),
    "gaussian-kl-scalars": (
        lambda: vi.kl(vi.Normal(0.0, 1.0), vi.Normal(0.0, 1.0)),
        ValueError,
        ["event axis (..., D)"],
    ),
    "register-kl-not-a-class": (
        lambda: vi.register_kl("a", "b"),
        TypeError,
        ["register_kl(type_q=...)", "'a'"],
    ),
    # targets
    "logdensity-not-callable": (
        lambda: vi.from_logdensity("x**2", jnp.zeros(2)),
        TypeError,
        ["logdensity_fn", "got str"],
    ),
    "logdensity-empty-position": (
        lambda: vi.from_logdensity(lambda x: 0.0, jnp.zeros(0)),
        ValueError,
        ["init_position has no entries"],
    ),
    "logdensity-nan-position": (
        lambda: vi.from_logdensity(lambda x: -jnp.sum(x**2), jnp.array([0.0, jnp.nan])),
        ValueError,
        ["init_position is not finite", "entry 1"],
    ),
    "logdensity-vector-valued": (
        lambda: vi.fit(KEY, vi.from_logdensity(lambda x: -(x**2), jnp.zeros(2))),
        ValueError,
        ["logdensity_fn must return a scalar", "got shape (2,)"],
    ),
    "logdensity-returns-none": (
        lambda: vi.fit(KEY, vi.from_logdensity(lambda x: None, jnp.zeros(2))),
        TypeError,
        ["logdensity_fn must return a scalar array", "NoneType"],
    ),
    "logdensity-fails-at-start": (
        lambda: vi.fit(KEY, vi.from_logdensity(lambda p: -(p["a"] ** 2), jnp.zeros(1))),
        TypeError,
        ["target.logdensity_fn fails at target.init_position", "string indexing"],
    ),
    "numpyro-model-not-callable": (
        lambda: vi.from_numpyro("model"),
        TypeError,
        ["model", "got str"],
    ),
    "numpyro-model-without-latents": (
        lambda: vi.from_numpyro(lambda: None),
        ValueError,
        ["no latent sample sites"],
    ),
    "numpyro-nan-data": (
        lambda: vi.from_numpyro(_model, y=jnp.array([1.0, jnp.nan])),
        ValueError,
        ["not finite at any initial point", "NaN"],
    ),
    "numpyro-wrong-arguments": (
        lambda: vi.from_numpyro(_model, 1, 2, 3),
        TypeError,
        ["positional arguments"],
    ),
    "stack-nothing": (lambda: vi.stack_targets([]), ValueError, ["at least one target"]),
    "stack-different-structures": (
        lambda: vi.stack_targets([_target(2), _target(3)]),
        ValueError,
        ["targets[1]", "built differently"],
    ),
    "stack-not-targets": (
        lambda: vi.stack_targets([1, 2]),
        TypeError,
        ["targets[0]", "vi.Target", "got int"],
    ),
    "nuts-draws-zero": (
        lambda: vi.nuts_draws(KEY, _model, num_samples=0),
        ValueError,
        ["num_samples"],
    ),
    # process-wide settings
    "cpu-devices-zero": (lambda: vi.set_cpu_devices(0), ValueError, ["got 0"]),
    "cpu-devices-string": (lambda: vi.set_cpu_devices("2"), ValueError, ["'2'"]),
    "cache-size-negative": (
        lambda: vi.set_cache_size(-1),
        ValueError,
        ["maxsize", "non-negative", "-1"],
    ),
}


@pytest.mark.parametrize("call, error, fragments", CASES.values(), ids=CASES.keys())
def test_a_bad_argument_raises_its_type_and_names_the_culprit(call, error, fragments):
    with pytest.raises(Exception) as caught:
        call()
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.heavy
def test_a_legacy_uint32_key_gives_the_fit_of_its_typed_key():
    old = jax.random.PRNGKey(3)
    a = vi.fit(old, _target(), method=FAST)
    b = vi.fit(jax.random.wrap_key_data(old), _target(), method=FAST)
    np.testing.assert_array_equal(a.params.loc, b.params.loc)


def test_an_integer_position_is_fitted_in_floating_point():
    target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2, jnp.int32))
    assert jnp.issubdtype(target.init_position.dtype, jnp.floating)
    assert float(target.logdensity_fn(jnp.ones(2))) == 0.0


@pytest.mark.slow
def test_scipy_edges_are_results_not_errors():
    """q = 0 < p is +inf, 0·log 0 is 0, NaN in gives NaN out (scipy's semantics)."""
    p, q = jnp.array([0.5, 0.5, 0.0]), jnp.array([1.0, 0.0, 0.0])
    assert float(vi.kl_divergence(p, q)) == np.inf
    assert float(vi.kl_divergence(q, p)) == pytest.approx(np.log(2.0))
    assert np.isnan(float(vi.kl_divergence(jnp.array([np.nan, 1.0]), jnp.array([0.5, 0.5]))))


DOCUMENTED = 3
"""Odd but valid inputs checked above to give their documented result."""


def test_the_catalogue_is_at_least_as_large_as_promised():
    """The API catalogue here and the configs' (tried under run and validate): >= 150."""
    from tests.experiments.test_config_errors import CASES as CONFIG_CASES

    assert len(CASES) + len(CONFIG_CASES) >= 150, (len(CASES), len(CONFIG_CASES))

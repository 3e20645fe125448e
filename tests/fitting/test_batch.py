"""Many fits in one program: seeds, datasets, hyperparameters, sharding."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

import vi
from experiments import models
from experiments.benchmarks.record import rss_mib
from vi.fitting import batch as batch_module
from vi.fitting.batch import _lapack_on_cpu, _shard_inputs
from vi.fitting.fit import _fit_compiled, resolve
from vi.fitting.start import initial_params
from vi.targets.mixture import bimodal_2d, mixture_10d


def _regression_target(prob):
    return vi.from_numpyro(
        models.linear_gaussian_model, prob.X, prob.noise, prob.prior_scale, y=prob.y
    )


def _adam_sweep(**options):
    """A stochastic method whose learning rate ``fit_batch(hyperparameters=...)`` sets."""
    return vi.Stochastic(optax.inject_hyperparams(optax.adam)(learning_rate=1e-2), **options)


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_batch_over_seeds_matches_single_fits():
    target = _regression_target(models.random_regression())
    keys = jax.random.split(jax.random.key(0), 3)
    batch = vi.fit_batch(keys, target, init_radius=1.0)
    assert len(batch) == 3 and batch.stop_reasons == ["converged"] * 3
    for i in range(3):
        single = vi.fit(keys[i], target, init_radius=1.0)
        np.testing.assert_allclose(batch[i].params.loc, single.params.loc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batch[i].params.log_scale, single.params.log_scale, atol=1e-5)


@pytest.mark.slow
def test_a_batch_over_datasets_recovers_each_posterior():
    problems = [models.random_regression(seed=s) for s in range(3)]
    target = vi.stack_targets([_regression_target(p) for p in problems])
    batch = vi.fit_batch(jax.random.split(jax.random.key(0), 3), target, batched_target=True)
    for i, prob in enumerate(problems):
        error = np.abs(np.asarray(batch.params.loc[i]) - prob.posterior_mean) / prob.posterior_sd
        assert error.max() < 0.01
        np.testing.assert_allclose(np.exp(batch.params.log_scale[i]), prob.mean_field_sd, rtol=0.01)
    # A member knows its own dataset: its samples come from its own target slice.
    assert batch[1].sample(jax.random.key(0), 4)["b"].shape == (4, problems[1].X.shape[1])


@pytest.mark.heavy  # test_a_batch_runs_on_the_devices_it_is_given checks the same, cheaper
@pytest.mark.parametrize("batched_target", [False, True])
def test_members_split_over_devices_match_all_on_one(batched_target):
    # Five members on two devices: shares of 3 and 2 (padded with a copy of the last).
    problems = [models.random_regression(seed=s) for s in range(5)]
    if batched_target:
        target = vi.stack_targets([_regression_target(p) for p in problems])
    else:
        target = _regression_target(problems[0])
    keys = jax.random.split(jax.random.key(0), 5)
    rates = jnp.asarray([3e-3, 1e-2, 3e-2, 1e-2, 3e-3])
    options = dict(
        batched_target=batched_target,
        method=_adam_sweep(max_steps=500),
        hyperparameters={"learning_rate": rates},
    )
    whole = vi.fit_batch(keys, target, shard=False, **options)
    split = vi.fit_batch(keys, target, shard=True, **options)
    assert len(split) == 5
    assert split.info.num_steps.tolist() == whole.info.num_steps.tolist()
    np.testing.assert_allclose(split.params.loc, whole.params.loc, rtol=1e-5, atol=1e-6)


@pytest.mark.heavy
def test_a_batch_in_chunks_is_the_batch_in_one_call_bit_for_bit(capsys):
    """Seven members in chunks of 3 (the last padded), on both devices: every member's
    parameters and stop are those of the one-call batch, datasets and learning rates
    included, and each chunk shows its own progress."""
    problems = [models.random_regression(seed=s) for s in range(7)]
    target = vi.stack_targets([_regression_target(p) for p in problems])
    keys = jax.random.split(jax.random.key(1), 7)
    rates = jnp.asarray([3e-3, 1e-2, 3e-2, 1e-2, 3e-3, 1e-2, 2e-2])
    options = dict(
        batched_target=True,
        method=_adam_sweep(max_steps=300),
        hyperparameters={"learning_rate": rates},
    )
    whole = vi.fit_batch(keys, target, **options)
    chunks = vi.fit_batch(keys, target, chunk_size=3, progress=True, **options)
    assert len(chunks) == 7
    np.testing.assert_array_equal(chunks.params.loc, whole.params.loc)
    np.testing.assert_array_equal(chunks.params.log_scale, whole.params.log_scale)
    np.testing.assert_array_equal(chunks.info.num_steps, whole.info.num_steps)
    np.testing.assert_array_equal(chunks.info.status, whole.info.status)
    # Evaluated on other batch shapes, the final ELBO estimates differ in rounding only.
    np.testing.assert_allclose(chunks.info.elbo, whole.info.elbo, rtol=1e-6)
    np.testing.assert_allclose(chunks.trace, whole.trace, rtol=1e-6)
    err = capsys.readouterr().err
    assert "chunk 1/3" in err and "chunk 3/3" in err


@pytest.mark.slow
def test_a_batch_runs_on_the_devices_it_is_given():
    target = vi.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
    keys = jax.random.split(jax.random.key(0), 4)
    method = vi.Stochastic(max_steps=200, stopping=None)
    both = vi.fit_batch(keys, target, method=method, devices=jax.devices("cpu"))
    second = vi.fit_batch(keys, target, method=method, devices=jax.devices("cpu")[1:])
    assert second.params.loc.devices() == {jax.devices("cpu")[1]}
    np.testing.assert_allclose(second.params.loc, both.params.loc, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"devices must be a non-empty sequence of JAX devices"):
        vi.fit_batch(keys, target, devices=["cpu"])
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer or None, got 0"):
        vi.fit_batch(keys, target, chunk_size=0)


@pytest.mark.slow
def test_a_large_batch_is_chunked_to_fit_the_memory_it_has(monkeypatch, capsys):
    """A batch larger than the probe is measured from the program compiled for the probe:
    with almost no memory it runs in chunks of one member per device, as chunk_size=2
    does, with the same numbers."""
    monkeypatch.setattr(batch_module, "_PROBE_MEMBERS", 4)
    target = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    keys = jax.random.split(jax.random.key(0), 10)
    method = vi.Stochastic(max_steps=100, stopping=None)
    monkeypatch.setattr(batch_module, "_free_bytes", lambda device: 1)
    measured = vi.fit_batch(keys, target, method=method, progress=True)
    assert "chunk 5/5" in capsys.readouterr().err
    given = vi.fit_batch(keys, target, method=method, chunk_size=2)
    np.testing.assert_array_equal(measured.params.loc, given.params.loc)


@pytest.mark.heavy
def test_a_batch_over_learning_rates_matches_single_fits():
    target = _regression_target(models.random_regression())
    rates = jnp.asarray([3e-3, 1e-2, 3e-2])
    keys = jax.random.split(jax.random.key(0), 3)
    batch = vi.fit_batch(
        keys,
        target,
        method=_adam_sweep(max_steps=400),
        hyperparameters={"learning_rate": rates},
    )
    for i in range(3):
        method = vi.Stochastic(optax.adam(float(rates[i])), max_steps=400)
        single = vi.fit(keys[i], target, method=method)
        np.testing.assert_allclose(batch[i].params.loc, single.params.loc, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_poisoned_member_is_flagged_and_the_others_are_unchanged_bit_for_bit():
    problems = [models.random_regression(seed=s) for s in range(4)]
    clean = [_regression_target(p) for p in problems]
    # Corrupt member 2's data inside the batch: one NaN observation.
    y = jnp.asarray(problems[2].y)
    poisoned = list(clean)
    poisoned[2] = jax.tree.map(
        lambda leaf: (
            leaf.at[5].set(jnp.nan) if leaf.shape == y.shape and bool(jnp.all(leaf == y)) else leaf
        ),
        clean[2],
    )
    keys = jax.random.split(jax.random.key(0), 4)
    for method in (vi.FixedDraws(max_steps=1000), vi.Stochastic(max_steps=1000)):
        good = vi.fit_batch(keys, vi.stack_targets(clean), batched_target=True, method=method)
        with pytest.warns(RuntimeWarning, match=r"1 of 4 fits ended non-finite \(members \[2\]\)"):
            bad = vi.fit_batch(keys, vi.stack_targets(poisoned), batched_target=True, method=method)
        assert bad.stop_reasons[2] == "nonfinite"
        assert int(bad.info.failed_step[2]) >= 0
        with pytest.warns(RuntimeWarning, match="non-finite at step"):
            bad[2]
        for i in (0, 1, 3):
            _assert_same(bad[i].params, good[i].params)
            _assert_same(bad[i].info, good[i].info)


@pytest.mark.slow
def test_members_that_finish_early_stop_updating():
    # Members with very different learning rates stop at different steps.
    target = _regression_target(models.random_regression())
    rates = jnp.asarray([1e-3, 1e-1])
    batch = vi.fit_batch(
        jax.random.split(jax.random.key(0), 2),
        target,
        method=_adam_sweep(),
        hyperparameters={"learning_rate": rates},
    )
    steps = np.asarray(batch.info.num_steps)
    assert steps[0] != steps[1]
    early = int(np.argmin(steps))
    assert np.all(np.isnan(np.asarray(batch.trace[early, steps[early] :])))
    assert np.all(np.isfinite(np.asarray(batch.trace[early, : steps[early]])))


@pytest.mark.slow
def test_reverse_kl_restarts_land_on_the_modes_in_proportion_to_their_basins():
    target = bimodal_2d(separation=8.0)
    num_restarts = 64
    keys = jax.random.split(jax.random.key(0), num_restarts)
    batch = vi.fit_batch(keys, target, method=vi.Stochastic(), init_radius=4.0)
    x = np.asarray(batch.params.loc[:, 0])
    # Every restart sits on one mode with that component's scale.
    np.testing.assert_allclose(np.abs(x), 4.0, atol=0.1)
    np.testing.assert_allclose(np.exp(np.asarray(batch.params.log_scale)), 1.0, atol=0.1)
    # Equal basins (the half-planes): Binomial(64, 1/2) has sd 4; allow 3 sd.
    assert abs(int(np.sum(x > 0)) - num_restarts / 2) <= 12


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np, vi
    from vi.targets.mixture import bimodal_2d
    assert len(jax.devices()) == 4
    keys = jax.random.split(jax.random.key(0), 6)
    target = bimodal_2d(separation=8.0)
    out = {}
    for shard in (True, False):
        batch = vi.fit_batch(keys, target, init_radius=4.0, shard=shard,
                             method=vi.Stochastic(max_steps=1500))
        out[str(shard)] = {"loc": np.asarray(batch.params.loc).tolist(),
                           "steps": np.asarray(batch.info.num_steps).tolist()}
        # Results come back on one device, so that later programs on them are not
        # multi-device ones (those can deadlock on XLA:CPU); diagnose them all at once.
        leaves = jax.tree.leaves((batch.params, batch.info, batch.trace))
        out[str(shard)]["devices"] = sorted({len(leaf.devices()) for leaf in leaves})
        diagnostics = jax.jit(jax.vmap(lambda k, p: vi.diagnose(k, target, p)))(keys, batch.params)
        out[str(shard)]["finite"] = bool(np.isfinite(np.asarray(diagnostics.reverse_kl)).all())
    print(json.dumps(out))
    """
)


@pytest.mark.heavy
def test_sharded_batch_over_four_host_devices_matches_the_unsharded_run():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["True"]["steps"] == out["False"]["steps"]
    assert out["True"]["devices"] == out["False"]["devices"] == [1]
    assert out["True"]["finite"] and out["False"]["finite"]
    np.testing.assert_allclose(out["True"]["loc"], out["False"]["loc"], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.heavy
def test_hundreds_of_fits_with_new_data_compile_once_and_do_not_grow_memory():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))

    def one_fit(i):
        y = X @ rng.standard_normal(3) + 0.5 * rng.standard_normal(50)
        target = vi.from_numpyro(models.linear_gaussian_model, X, 0.5, 3.0, y=y)
        return vi.fit(jax.random.key(i), target)

    for i in range(20):
        one_fit(i)
    compiled = _fit_compiled._cache_size()
    before = rss_mib()
    for i in range(300):
        result = one_fit(i)
    assert result.converged
    assert _fit_compiled._cache_size() == compiled
    # NumPyro's svi.run grows ~8 MB a call here; allow 0.1 MB a call for allocator noise.
    assert rss_mib() - before < 30.0


@pytest.mark.heavy
def test_a_progress_bar_reports_and_changes_nothing(capsys):
    target = _regression_target(models.random_regression())
    method = vi.Stochastic(optax.adam(1e-2))
    quiet = vi.fit(jax.random.key(0), target, progress=False, method=method)
    shown = vi.fit(jax.random.key(0), target, progress=True, method=method)
    _assert_same(quiet.params, shown.params)
    assert "step" in capsys.readouterr().err
    keys = jax.random.split(jax.random.key(0), 2)
    quiet = vi.fit_batch(keys, target, progress=False, method=vi.Stochastic())
    shown = vi.fit_batch(keys, target, progress=True, method=vi.Stochastic())
    _assert_same(quiet.params, shown.params)
    assert "running" in capsys.readouterr().err


def test_a_model_whose_data_has_nan_gets_a_clear_error():
    prob = models.random_regression()
    y = prob.y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vi.from_numpyro(models.linear_gaussian_model, prob.X, prob.noise, prob.prior_scale, y=y)


def test_targets_that_cannot_be_stacked_are_named():
    def logdensity(data, x):
        return -0.5 * jnp.sum((x - data) ** 2)

    def target(fn, data):
        return vi.from_logdensity(jax.tree_util.Partial(fn, data), jnp.zeros(3))

    other = lambda data, x: logdensity(data, x)
    with pytest.raises(ValueError, match=r"targets\[1\] is built differently"):
        vi.stack_targets([target(logdensity, jnp.ones(3)), target(other, jnp.ones(3))])
    plain = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(3))  # fewer leaves
    with pytest.raises(ValueError, match=r"targets\[1\] is built differently"):
        vi.stack_targets([target(logdensity, jnp.ones(3)), plain])
    with pytest.raises(ValueError, match=r"targets\[1\] has array shapes"):
        vi.stack_targets([target(logdensity, jnp.ones(3)), target(logdensity, jnp.ones(2))])
    with pytest.raises(ValueError, match="at least one target"):
        vi.stack_targets([])


def test_batch_bad_input_is_named():
    target = _regression_target(models.random_regression())
    keys = jax.random.split(jax.random.key(0), 2)
    rates = {"learning_rate": jnp.ones(2)}
    with pytest.raises(TypeError, match="rng_keys must be a batch"):
        vi.fit_batch(jax.random.key(0), target)
    with pytest.raises(ValueError, match=r"init_position must have shape \(3, D\)"):
        vi.fit_batch(jax.random.split(jax.random.key(0), 3), target, batched_target=True)
    with pytest.raises(TypeError, match="hyperparameters must be a dict"):
        vi.fit_batch(keys, target, method=_adam_sweep(), hyperparameters=jnp.ones(2))
    with pytest.raises(ValueError, match=r"hyperparameters\['learning_rate'\] must have a leading"):
        vi.fit_batch(
            keys, target, method=_adam_sweep(), hyperparameters={"learning_rate": jnp.ones(3)}
        )
    with pytest.raises(TypeError, match=r"give method=vi\.Stochastic\(optimizer=\.\.\.\)"):
        vi.fit_batch(keys, target, hyperparameters=rates)


def test_a_bar_over_shards_shows_the_slowest_running_shard_and_all_running_fits():
    from vi.fitting.progress import ProgressBar

    with ProgressBar(1000, num_fits=10) as bar:
        bar.update(250, 5, shard=0)
        bar.update(500, 5, shard=1)
        assert bar._tqdm.n == 250 and "10/10 running" in bar._tqdm.postfix
        bar.update(750, 0, shard=0)  # shard 0 is done: shard 1 sets the pace
        assert bar._tqdm.n == 500 and "5/10 running" in bar._tqdm.postfix
        bar.update(1250, 0, shard=1)  # a last window past max_steps shows max_steps
        assert bar._tqdm.n == 1000 and "0/10 running" in bar._tqdm.postfix


def _uses_lapack(target, *, method=None, objective=None, hyperparameters=None):
    """Whether fit_batch's program for two members, sharded as fit_batch shards it (when
    there are two devices), has a LAPACK call."""
    keys = jax.random.split(jax.random.key(0), 2)
    method, problem = resolve(target, method, objective, None, None)
    children, aux = problem.tree_flatten()
    axes = (None,) * len(children)
    static = dict(
        method=method,
        aux=aux,
        axes=axes,
        init_radius=None,
        num_eval_samples=1024,
        progress_every=None,
    )
    inputs = (keys, children, initial_params(target, None, (2,)), hyperparameters)
    mesh = None
    if len(jax.local_devices()) > 1:
        mesh = Mesh(np.asarray(jax.local_devices()[:2]), ("batch",))
        inputs = _shard_inputs(inputs, axes, mesh, 2)
    return _lapack_on_cpu(inputs, mesh, static)


@pytest.mark.slow
def test_lapack_calls_are_found_anywhere_in_the_batch_program():
    # A sharded batch that makes LAPACK calls runs on one CPU device (they can deadlock it).
    cov = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])

    def sample_fn(rng_key, n):  # factorises cov at every call: LAPACK on CPU
        return jax.random.normal(rng_key, (n, 2)) @ jnp.linalg.cholesky(cov).T

    def solving_logdensity(x):
        return -0.5 * jnp.sum(jnp.linalg.solve(cov, x) * x)

    plain = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    sampled = plain._replace(sample_fn=sample_fn)
    exact = dict(objective=vi.ForwardKL(vi.Exact()))
    assert _uses_lapack(sampled, **exact)
    assert not _uses_lapack(sampled, objective=vi.ForwardKL(vi.SNIS()))
    assert not _uses_lapack(sampled)
    assert not _uses_lapack(plain, method=vi.Stochastic())
    assert _uses_lapack(vi.from_logdensity(solving_logdensity, jnp.zeros(2)))

    # In an optimizer: one that preconditions with a Cholesky solve (made per member from
    # its hyperparameters, so only the whole program shows it).
    def preconditioned(learning_rate):
        def update(updates, state, params=None):
            factor = jnp.linalg.cholesky(jnp.eye(2) + 0.1)
            solve = lambda u: jax.scipy.linalg.cho_solve((factor, True), u)
            return jax.tree.map(lambda u: -learning_rate * solve(u), updates), state

        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    rates = {"learning_rate": jnp.asarray([1e-2, 2e-2])}
    swept = lambda make: vi.Stochastic(optax.inject_hyperparams(make)(learning_rate=1e-2))
    assert _uses_lapack(plain, method=swept(preconditioned), hyperparameters=rates)
    assert not _uses_lapack(plain, method=swept(optax.adam), hyperparameters=rates)
    # The mixtures multiply by precomputed inverse factors; their fits keep every device.
    mixture = mixture_10d()
    assert not _uses_lapack(mixture, **exact)

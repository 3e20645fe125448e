"""The corpus of NumPyro models: every default fit reaches its stored mean-field optimum.

The references (``experiments/corpus/references/<name>.json``) come from
``experiments/corpus/make_references.py``: a 4096-draw fixed-draw fit in float64 and NUTS.
The default fit (64 fixed draws up to D = 32) moves the optimum by O(1/sqrt(64)) of the
non-Gaussian part of the posterior; on the centred eight schools that is under 0.015 nats
and 0.04 sd (``vi.fitting.fixed_draws.default_num_draws``), so 0.05 nats and 0.1 sd leave
room without hiding a fit that stopped short. The ELBOs of the fit and of the optimum come
from the same 4096 draws, so their difference has a Monte-Carlo error far below 0.05 nats
when the two are close.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_uniform, init_to_value

import vi
from experiments.corpus import scoring
from experiments.corpus.models import CORPUS

GAP_TOL = 0.05  # nats
SD_TOL = 0.1  # posterior standard deviations (NUTS)
NUM_ELBO_DRAWS = 4096


def unconstrained_dim(case) -> int:
    """D counted from the model's trace (abstractly: nothing runs), site by site."""

    def sizes():
        seeded = handlers.seed(case.model, jax.random.key(0))
        at_init = handlers.substitute(seeded, substitute_fn=init_to_uniform)
        trace = handlers.trace(at_init).get_trace(*case.args, **case.kwargs)
        return [
            biject_to(site["fn"].support).inv(site["value"])
            for site in trace.values()
            if site["type"] == "sample" and not site["is_observed"]
        ]

    return sum(int(np.prod(s.shape)) for s in jax.eval_shape(sizes))


def test_the_corpus_has_twenty_models_each_with_its_reference():
    assert len(CORPUS) >= 20
    assert sum(case.fast for case in CORPUS.values()) >= 8
    for name, case in CORPUS.items():
        reference = scoring.load_reference(name)
        dim = unconstrained_dim(case)
        assert reference["dim"] == dim, name
        for part, key in [("optimum", "loc"), ("optimum", "log_scale"), ("nuts", "sd")]:
            assert len(reference[part][key]) == dim, (name, part, key)


LOCAL_OPTIMUM = pytest.mark.xfail(
    strict=True,
    reason="the default start (and eight restarts with init_radius=2, and NumPyro's AutoNormal) "
    "lands where the three ordered means collapse into one Gaussian, 45 nats below the optimum; "
    "a start at the data's quantiles reaches it (test_a_start_from_the_data_...)",
)


def _marks(name, case):
    return ([] if case.fast else [pytest.mark.heavy]) + (
        [LOCAL_OPTIMUM] if name == "mixture3_ordered" else []
    )


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n, c)) for n, c in CORPUS.items()])
@pytest.mark.slow
def test_default_fit_reaches_the_stored_optimum(name, x64):
    case = CORPUS[name]
    _assert_at_the_optimum(name, vi.from_numpyro(case.model, *case.args, **case.kwargs))


@pytest.mark.heavy
def test_a_start_from_the_data_reaches_the_mixtures_optimum(x64):
    case = CORPUS["mixture3_ordered"]
    means = jnp.asarray(np.quantile(case.kwargs["y"], [1 / 6, 1 / 2, 5 / 6]))
    start = init_to_value(values={"mu": means})
    target = vi.from_numpyro(case.model, *case.args, init_strategy=start, **case.kwargs)
    _assert_at_the_optimum("mixture3_ordered", target)


def _assert_at_the_optimum(name, target):
    reference = scoring.load_reference(name)
    result = vi.fit(jax.random.key(1), target)
    assert result.stop_reason == "converged"
    optimum = scoring.optimum_params(reference)
    fitted, best = scoring.common_draw_elbos(
        jax.random.key(2), target.logdensity_fn, [result.params, optimum], NUM_ELBO_DRAWS
    )
    assert best - fitted <= GAP_TOL
    sd = reference["nuts"]["sd"]
    assert scoring.max_mean_error(result.params.loc, optimum.loc, sd) <= SD_TOL

"""What a fit carries and returns: its problem, its status, and its diagnostics."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vi.families import family
from vi.families.family import Params
from vi.targets.target import is_array

RUNNING, CONVERGED, STALLED, MAX_STEPS, NONFINITE, WEIGHTS_COLLAPSED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {
    RUNNING: "running",
    CONVERGED: "converged",
    STALLED: "stalled",
    MAX_STEPS: "max_steps",
    NONFINITE: "nonfinite",
    WEIGHTS_COLLAPSED: "weights_collapsed",
}
"""Why a fit stopped. ``converged``: at the optimum of its objective to the method's
stated tolerance; ``stalled``: it stopped making progress without that being shown (a
fixed-draw fit whose line search cannot improve at working precision with its gradient
over ``tol``; a stochastic fit whose stopping rule saw no progress while its estimated gap
to the optimum, plus three standard errors, is over ``gap_tol``); ``nonfinite``: the loss
or gradient stayed non-finite (or q puts mass where the target is not finite) and the fit
kept its last finite parameters; ``weights_collapsed``: an importance-sampled forward-KL
fit whose effective sample size fell below the allowed fraction, so its answer rests on a
handful of draws."""


class FitInfo(NamedTuple):
    """Diagnostics of a finished fit (each field is a scalar per fit).

    Attributes:
      num_steps: optimisation steps taken.
      status: why it stopped, a key of ``STATUS_NAMES``.
      elbo: ELBO at the final parameters, from fresh draws (unbiased).
      elbo_stderr: its Monte-Carlo standard error.
      objective: the ELBO as the optimiser saw it at the end: the fixed-draw
        ELBO for a fixed-draw fit, the mean of the last window of noisy
        estimates for a stochastic fit. ``objective - elbo`` shows how far the
        fixed draws moved the answer (compare with ``elbo_stderr``).
      grad_norm: the largest gradient entry in natural units at the end: the
        ELBO's change per posterior standard deviation of each mean, and per
        unit of each log scale.
      rel_change: the relative change of the objective over the last check.
      num_nonfinite: steps whose loss or gradient was non-finite (skipped).
      failed_step: the step at which a fit gave up on non-finite values, or -1.
      ess_fraction: for importance-sampled objectives, the mean effective sample
        size over the last window as a fraction of the draws; NaN otherwise.
      gap: what the objective still has to gain at its optimum, estimated where a
        stochastic fit with a stopping rule stopped (the ELBO: ``vi.objectives.gap``; the
        cross-entropy of ``ForwardKL(Exact())`` or ``Draws``: from the draws' moments), in
        nats; NaN where not estimated (fixed-draw fits, whose ``converged`` rests on their
        gradient, ``stopping=None`` and ``SNIS``).
      gap_stderr: its Monte-Carlo standard error; +inf when the estimate failed (the
        Hessian not positive definite there, the solve unfinished or a value non-finite).
    """

    num_steps: jax.Array
    status: jax.Array
    elbo: jax.Array
    elbo_stderr: jax.Array
    objective: jax.Array
    grad_norm: jax.Array
    rel_change: jax.Array
    num_nonfinite: jax.Array
    failed_step: jax.Array
    ess_fraction: jax.Array
    gap: jax.Array
    gap_stderr: jax.Array


class FitOutput(NamedTuple):
    """The pytree a compiled fit returns.

    Attributes:
      params: the fitted parameters of q's family.
      trace: (max_steps,) the objective after each step; NaN after the stop.
      info: diagnostics.
    """

    params: Params
    trace: jax.Array
    info: FitInfo


def flag_nonfinite_elbo(info: FitInfo) -> FitInfo:
    """Marks a fit ``nonfinite`` when its final ELBO estimate is not finite.

    The optimiser can stop with finite parameters (a line search that refuses to
    step into a region where the target is NaN) while q still puts mass there.
    """
    bad = ~jnp.isfinite(info.elbo) & (info.status != NONFINITE)
    return info._replace(
        status=jnp.where(bad, NONFINITE, info.status).astype(info.status.dtype),
        failed_step=jnp.where(bad, info.num_steps, info.failed_step).astype(info.failed_step.dtype),
    )


def natural_grad_norm(params: Params, grad: Params) -> jax.Array:
    """Largest gradient entry measured in the units of q itself (see FitInfo)."""
    return family.grad_norm(params, grad)


def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@jax.tree_util.register_pytree_node_class
class Problem:
    """A target and an objective as one pytree: their arrays are its leaves, and their
    functions and options its static structure, so a state that holds a ``Problem``
    passes through ``jit`` and ``vmap`` however the target's functions were written.

    Which leaves are arrays is decided once, when the problem is made from real values,
    and kept in its structure: JAX also flattens trees whose leaves are placeholders.

    Attributes:
      target: the ``vi.Target`` being fitted.
      objective: the objective (``vi.ReverseKL()``, ``vi.ForwardKL(...)``), resolved for it.
    """

    def __init__(self, target, objective, *, _static=None):
        self.target = target
        self.objective = objective
        if _static is None:
            leaves, treedef = jax.tree.flatten((target, objective))
            _static = (treedef, tuple(None if is_array(x) else x for x in leaves))
        self._static = _static

    def tree_flatten(self):
        leaves = jax.tree.leaves((self.target, self.objective))
        children = [x if o is None else None for x, o in zip(leaves, self._static[1], strict=True)]
        return children, self._static

    @classmethod
    def tree_unflatten(cls, aux, children):
        treedef, others = aux
        leaves = [c if o is None else o for c, o in zip(children, others, strict=True)]
        return cls(*jax.tree.unflatten(treedef, leaves), _static=aux)

"""How far a Gaussian q is from the optimum of its ELBO in its family, in nats.

A stochastic fit's stopping rule sees only noisy gradients, and on an ill-conditioned
posterior a slow direction can hide under the noise of a fast one: the loss stops moving
while the mean is still far off. This module checks a fit where it stands. Near the
optimum the negative ELBO ``f`` is close to quadratic, so the ELBO still to gain is about
``½ gᵀ H⁻¹ g`` (the Newton decrement), with ``g`` and ``H`` the gradient and Hessian of
``f`` in q's parameters (means and log scales). ``H`` is taken on a fixed set of draws and
solved against by preconditioned conjugate gradients (Hessian-vector products only, the
preconditioner the Hessian's diagonal at a Gaussian optimum: ``diag(σ², ½)`` for the mean-field
family, ``vi.families.family.precondition``). ``g``
is estimated from two disjoint halves of the draws, A and B, each draw with its mirror
image ``-ε`` and with the sticking-the-landing estimator (Roeder, Wu & Duvenaud 2017). Both
are unbiased; on a Gaussian posterior the pair removes all noise from the means' gradient
and, at the optimum, from the log scales' gradient save what correlations the mean-field
family cannot express. That matters: along the slow direction of a posterior with
correlation −0.9999 the plain estimator's noise is a hundred times the signal.
Given H (from draws of its own), ``½ ĝ_Bᵀ H⁻¹ ĝ_A`` is unbiased for ``½ gᵀ H⁻¹ g``
where the same-draw product ``½ ĝᵀ H⁻¹ ĝ`` would add the noise's own size; the estimate
averages it with ``½ ĝ_Aᵀ H⁻¹ ĝ_B`` (two solves), and its standard error adds the spread
of the per-pair products over B and over A.

The standard error grows with D and with how far the posterior is from Gaussian, so with
a fixed number of draws a fit in high dimension may be left unconfirmed (``stalled``)
even at its optimum: raise ``Stopping(gap_draws=...)`` there.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vi.families import family
from vi.families.family import Params
from vi.families.mean_field import MeanFieldParams


class Gap(NamedTuple):
    """The ELBO still to gain, estimated where q stands.

    Attributes:
      value: the estimated gap in nats (unbiased for the quadratic model).
      stderr: its Monte-Carlo standard error.
      solved: whether conjugate gradients solved ``H x = g`` (False when the Hessian is
        not positive definite there, or the solve did not converge): without it the
        estimate means nothing.
    """

    value: jax.Array
    stderr: jax.Array
    solved: jax.Array

    def upper(self, num_stderr: float = 3.0) -> jax.Array:
        """A bound the gap stays under unless the draws were unlucky; +inf when unsolved."""
        return jnp.where(self.solved, self.value + num_stderr * self.stderr, jnp.inf)


_HESSIAN_PAIRS = 64
"""Mirrored pairs of draws for the Hessian: it is only the metric of the solve, and near
the optimum its noise changes the estimated gap by a factor close to one."""


_dot = family.tree_dot


def _scale(c, a: Params) -> Params:
    return jax.tree.map(lambda x: c * x, a)


def _add(a: Params, b: Params) -> Params:
    return jax.tree.map(jnp.add, a, b)


def _conjugate_gradients(hvp, rhs, precondition, max_iter: int, rtol: float):
    """``(x, solved)`` with ``H x = rhs`` by preconditioned conjugate gradients, stopping at
    a relative residual ``rtol`` (solved), negative curvature or ``max_iter`` (unsolved)."""
    zero = jax.tree.map(jnp.zeros_like, rhs)
    z = precondition(rhs)
    rz = _dot(rhs, z)
    target = rtol**2 * rz

    def cond(carry):
        i, _, _, _, rz, ok = carry
        return (i < max_iter) & (rz > target) & ok

    def body(carry):
        i, x, r, p, rz, _ = carry
        hp = hvp(p)
        curvature = _dot(p, hp)
        ok = curvature > 0
        alpha = jnp.where(ok, rz / jnp.where(ok, curvature, 1.0), 0.0)
        x = _add(x, _scale(alpha, p))
        r = _add(r, _scale(-alpha, hp))
        z = precondition(r)
        rz_new = _dot(r, z)
        p = _add(z, _scale(rz_new / rz, p))
        return i + 1, x, r, p, rz_new, ok

    carry = (jnp.zeros((), jnp.int32), zero, rhs, z, rz, jnp.asarray(True))
    _, x, _, _, rz, ok = jax.lax.while_loop(cond, body, carry)
    return x, ok & (rz <= target)


def optimum_gap(
    rng_key: jax.Array,
    params: Params,
    logdensity_fn,
    num_draws: int = 1024,
    *,
    max_iter: int | None = None,
    rtol: float = 1e-3,
    minibatch_fn=None,
) -> Gap:
    """The ELBO q would still gain at the optimum of its family (see module).

    Args:
      rng_key: key for the draws.
      params: q's parameters, (D,) each.
      logdensity_fn: the target's log density on R^D.
      num_draws: standard-normal draws for the gradient, in mirrored pairs (a multiple of 4,
        at least 8: half of the pairs estimate each of the two gradients); the Hessian
        takes 128 draws of its own.
      max_iter: conjugate-gradient iterations at most (default ``2 D + 10``, capped at 200).
      rtol: the relative residual at which the solve counts as converged.
      minibatch_fn: for a target that subsamples its data, ``(rng_key, x) -> log density
        estimate``: each pair of draws then takes its own subsample (the gradients stay
        unbiased), eight pairs at a time, and the Hessian one shared subsample.

    Raises:
      ValueError: when ``num_draws`` is not a multiple of 4 of at least 8.

    Returns:
      A ``Gap``.
    """
    if num_draws < 8 or num_draws % 4:
        raise ValueError(f"num_draws must be a multiple of 4, at least 8; got {num_draws}")
    dim = family.noise_dim(params)
    half = num_draws // 4  # mirrored pairs in each of A and B
    draw_key, hessian_key, data_key = jax.random.split(rng_key, 3)
    base = jax.random.normal(draw_key, (2 * half, dim), params.loc.dtype)
    # The Hessian has draws of its own, so that it is independent of both gradients.
    hessian_base = jax.random.normal(hessian_key, (_HESSIAN_PAIRS, dim), params.loc.dtype)
    hessian_eps = jnp.concatenate([hessian_base, -hessian_base])
    if minibatch_fn is None:
        density = lambda key, x: logdensity_fn(x)
    else:
        density = minibatch_fn
    pair_keys = jax.random.split(data_key, 2 * half + 1)

    mean_field = isinstance(params, MeanFieldParams)

    def loss(theta):
        z = family.transform(theta, hessian_eps)
        log_p = jax.vmap(density, (None, 0))(pair_keys[-1], z)
        if mean_field:  # the entropy less its constant
            return -jnp.mean(log_p) - jnp.sum(theta.log_scale)
        return -jnp.mean(log_p) - family.entropy(theta)

    def pair_grad(key, eps_i):
        # Sticking the landing (the score of q, held fixed, added to the path gradient),
        # averaged over the draw and its mirror image.
        eps = jnp.stack([eps_i, -eps_i])
        if not mean_field:

            def sticking(theta):
                z = family.transform(theta, eps)
                log_p = jax.vmap(density, (None, 0))(key, z)
                return -jnp.mean(log_p - family.held_log_prob(theta, eps, z))

            return jax.grad(sticking)(params)
        # The mean-field gradient in closed form, from the target's gradient at the draws.
        sigma = jnp.exp(params.log_scale)
        z = params.loc + sigma * eps
        g_z = -(jax.vmap(jax.grad(density, 1), (None, 0))(key, z) + eps / sigma)
        return MeanFieldParams(jnp.mean(g_z, 0), jnp.mean(g_z * (z - params.loc), 0))

    # A subsampling target's draws each index the whole dataset: a few at a time.
    batch_size = None if minibatch_fn is None else 8
    grads = jax.lax.map(lambda a: pair_grad(*a), (pair_keys[:-1], base), batch_size=batch_size)
    return newton_gap(params, grads, loss, max_iter=max_iter, rtol=rtol)


def newton_gap(params: Params, grads: Params, loss, *, max_iter=None, rtol: float = 1e-3) -> Gap:
    """``½ gᵀ H⁻¹ g`` from independent, unbiased gradient estimates (see the module).

    Args:
      params: q's parameters, (D,) each.
      grads: (2 n, D) each: estimates of the loss's gradient at ``params``; the first n
        are half A, the last n half B.
      loss: the loss as a function of the parameters on draws of its own, whose Hessian
        at ``params`` is the metric.
      max_iter: conjugate-gradient iterations at most (default ``2 D + 10``, capped at 200).
      rtol: the relative residual at which the solve counts as converged.

    Returns:
      A ``Gap``.
    """
    half = jax.tree.leaves(grads)[0].shape[0] // 2
    size = family.num_params(params) // 2  # D for the mean-field family
    max_iter = min(2 * size + 10, 200) if max_iter is None else max_iter
    grads_a = jax.tree.map(lambda g: g[:half], grads)
    grads_b = jax.tree.map(lambda g: g[half:], grads)
    means = jax.tree.map(
        lambda a, b: jnp.stack([jnp.mean(a, axis=0), jnp.mean(b, axis=0)]), grads_a, grads_b
    )

    _, hvp = jax.linearize(jax.grad(loss), params)
    precondition = lambda r: family.precondition(params, r)
    solve = lambda rhs: _conjugate_gradients(hvp, rhs, precondition, max_iter, rtol)
    x, solved = jax.vmap(solve)(means)  # H⁻¹ ĝ_A and H⁻¹ ĝ_B
    x_a, x_b = jax.tree.map(lambda v: v[0], x), jax.tree.map(lambda v: v[1], x)
    # ½ ĝ_Bᵀ H⁻¹ ĝ_A and ½ ĝ_Aᵀ H⁻¹ ĝ_B, each with the spread of the other half's pairs.
    on_b = jax.vmap(lambda g: _dot(g, x_a))(grads_b)
    on_a = jax.vmap(lambda g: _dot(g, x_b))(grads_a)
    value = 0.25 * (jnp.mean(on_b) + jnp.mean(on_a))
    # Each half's noise enters through both products: the variance of one product is
    # about the sum of the two spreads, which bounds that of their mean.
    stderr = 0.5 * jnp.sqrt((jnp.var(on_b, ddof=1) + jnp.var(on_a, ddof=1)) / half)
    finite = jnp.isfinite(value) & jnp.isfinite(stderr)
    return Gap(value, stderr, jnp.all(solved) & finite)


def estimator_gap(
    rng_key: jax.Array,
    params: Params,
    loss_fn,
    num_draws: int,
    group_size: int,
) -> Gap:
    """The gap to the optimum of an objective estimated from groups of draws.

    For bounds that are not a mean over single draws (the Rényi and importance-weighted
    bounds of ``group_size`` particles): each group and its mirror image ``-ε`` give one
    unbiased estimate of the gradient of the expected loss, which the fit minimises;
    ``newton_gap`` does the rest, its Hessian on 32 mirrored groups of its own.

    Args:
      rng_key: key for the draws.
      params: q's parameters, (D,) each.
      loss_fn: ``(params, eps) -> loss`` for standard-normal draws ``eps`` (1, K, D).
      num_draws: sets the draws for the gradients, which are about four times as many
        (``4 * ceil(num_draws / group_size)`` groups, rounded to whole mirrored pairs; at
        least 32 groups): these bounds' plain gradients are noisier than the ELBO's
        mirrored sticking-the-landing ones.
      group_size: K, the draws of one estimate of the bound.
    """
    dim = family.noise_dim(params)
    num_pairs = 4 * max(4, -(-num_draws // group_size) // 2)
    draw_key, hessian_key = jax.random.split(rng_key)
    dtype = params.loc.dtype
    base = jax.random.normal(draw_key, (num_pairs, 1, group_size, dim), dtype)
    hessian_base = jax.random.normal(hessian_key, (32, group_size, dim), dtype)
    hessian_eps = jnp.concatenate([hessian_base, -hessian_base])

    def pair_grad(eps):
        g = jax.grad(loss_fn)(params, eps)
        g_mirror = jax.grad(loss_fn)(params, -eps)
        return jax.tree.map(lambda a, b: 0.5 * (a + b), g, g_mirror)

    grads = jax.lax.map(pair_grad, base)
    return newton_gap(params, grads, lambda theta: loss_fn(theta, hessian_eps))

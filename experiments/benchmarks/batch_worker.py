"""The worker side of ``bench_batch.py``: builds and times the contenders.

A worker runs in its own process, started by ``bench_batch.py`` with the JAX configuration
it is to measure (one CPU device per core, or one device), and imports JAX only once it
starts serving, so the parent never does. It reads one JSON request per line on stdin and
answers one JSON line on stdout.
"""

import contextlib
import io
import json
import os
import re
import statistics
import sys
import time

LEARNING_RATE = 1e-2
NUM_DATA, DIM = 1000, 10
INIT_SCALE = 0.1
MAX_DISTINCT_DATASETS = 1024
PEERS = ("numpyro jit(vmap(svi.run))", "blackjax meanfield_vi, vmap in scan")
LOOPS = (
    "numpyro svi.run (progress bar)",
    "numpyro svi.run (progress_bar=False)",
    "numpyro loop over jit(svi.run)",
)
LOOP_FITS = {LOOPS[0]: 2, LOOPS[1]: 2, LOOPS[2]: 16}


class Worker:
    """Builds contenders (zero-argument calls returning ``(output, steps run)``) and times them."""

    def __init__(self):
        import jax
        import optax

        import vi
        from experiments.benchmarks.compile_clock import CompileClock

        # As a user would, before JAX starts: one CPU device per core, or the count in
        # JAX_NUM_CPU_DEVICES (bench_batch.py sets 1 for its "one device" worker).
        vi.set_cpu_devices()

        self.jax = jax
        self.optimizer = optax.adam(LEARNING_RATE)  # one object: vi's programs are keyed on it
        self.clock = CompileClock()
        self.calls: dict[str, object] = {}
        self.data = None
        self.targets: list = []

    def info(self):
        return {
            "backend": self.jax.default_backend(),
            "num_devices": len(self.jax.local_devices()),
            "jax": self.jax.__version__,
        }

    # -- problems

    def datasets(self, count):
        """(count, N, D), (count, N): ``logistic_data`` seeds 0, 1, ... (cycled past 1024)."""
        import numpy as np

        from experiments import models

        have, need = (
            0 if self.data is None else len(self.data[0]),
            min(count, MAX_DISTINCT_DATASETS),
        )
        if have < need:
            new = [models.logistic_data(NUM_DATA, DIM, seed) for seed in range(have, need)]
            old = self.data or (np.zeros((0, NUM_DATA, DIM), np.float32), np.zeros((0, NUM_DATA)))
            self.data = (
                np.concatenate([old[0], np.stack([x for x, _ in new])]),
                np.concatenate([old[1], np.stack([y for _, y in new])]).astype(np.float32),
            )
        index = np.arange(count) % len(self.data[0])
        return self.data[0][index], self.data[1][index]

    def problem(self, setting, batch):
        """Keys, the target, whether it is batched, and the data as NumPyro takes it."""
        import vi
        from experiments import models

        jax = self.jax
        keys = jax.random.split(jax.random.key(0), batch)
        if setting == "seeds":
            xs, ys = self.datasets(1)
            target = vi.from_numpyro(models.logistic_regression, xs[0], y=ys[0])
            return keys, target, False, (xs[0], ys[0])
        xs, ys = self.datasets(batch)
        distinct = min(batch, MAX_DISTINCT_DATASETS)
        while len(self.targets) < distinct:
            i = len(self.targets)
            self.targets.append(vi.from_numpyro(models.logistic_regression, xs[i], y=ys[i]))
        target = vi.stack_targets([self.targets[i % distinct] for i in range(batch)])
        return keys, target, True, (xs, ys)

    def init_params(self, target, batch):
        import jax.numpy as jnp

        from vi.families.mean_field import MeanFieldParams

        loc = jnp.broadcast_to(target.init_position, (batch, target.dim))
        return MeanFieldParams(loc, jnp.full_like(loc, jnp.log(INIT_SCALE)))

    def shard(self, tree, batched, batch):
        """Places inputs as ``fit_batch`` does: the batch axis padded to a multiple of the
        device count and split over the devices; shared inputs replicated."""
        import jax.numpy as jnp
        import numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        jax = self.jax
        devices = jax.local_devices()
        if len(devices) == 1:
            return tree
        mesh = Mesh(np.asarray(devices), ("batch",))
        if not batched:
            return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
        padded = -(-batch // len(devices)) * len(devices)

        def place(leaf):
            if padded != batch:
                leaf = jnp.concatenate([leaf, jnp.repeat(leaf[-1:], padded - batch, axis=0)])
            return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec("batch")))

        return jax.tree.map(place, tree)

    # -- contenders

    def build(self, name, setting, batch, num_samples, steps):
        keys, target, batched, data = self.problem(setting, batch)
        if name == "vi run_batch":
            return self.vi_run_batch(keys, target, batched, num_samples, steps)
        if name.startswith("vi fit_batch"):
            return self.vi_fit(keys, target, batched, num_samples, steps, "progress=True" in name)
        if name.startswith("vi fit,"):
            return self.vi_fit(None, target, False, num_samples, steps, "progress=True" in name)
        if name == PEERS[0]:
            return self.numpyro_vmap(keys, data, batched, num_samples, steps)
        if name == PEERS[1]:
            return self.blackjax(keys, target, batched, num_samples, steps)
        if name.startswith("floor"):
            return self.floor(keys, target, batched, num_samples, steps, "sharded" in name)
        if name in LOOPS:
            return self.numpyro_loop(name, keys, data, batched, num_samples, steps)
        raise ValueError(f"unknown contender {name!r}")

    def vi_options(self, num_samples, steps, progress=False):
        """The options of every vi contender: the stochastic method, as the peers run."""
        return dict(
            method="stochastic",
            optimizer=self.optimizer,
            num_samples=num_samples,
            max_steps=steps,
            num_eval_samples=2,
            progress=progress,
        )

    def vi_prepared(self, keys, target, batched, num_samples, steps):
        """``fit_batch``'s own program for ``steps``-step fits that cannot stop early (its
        stopping rule runs every window, but ``num_decays = steps``)."""
        from vi.fitting.spec import FitOptions, prepare

        options = FitOptions(**self.vi_options(num_samples, steps))
        spec, init_params, draws = prepare(
            target, options, batch_size=keys.shape[0], batched_target=batched
        )
        spec = spec._replace(options=(*spec.options, ("num_decays", steps)))
        return spec, init_params, draws

    def vi_run_batch(self, keys, target, batched, num_samples, steps):
        """``vi.fit_batch`` as shipped (sharded over every local device), ``steps`` steps."""
        from vi.fitting.batch import run_prepared

        spec, init_params, draws = self.vi_prepared(keys, target, batched, num_samples, steps)

        def call():
            result = run_prepared(keys, target, spec, init_params, draws, batched_target=batched)
            return result.params, int(result.info.num_steps.max())

        return call

    def vi_fit(self, keys, target, batched, num_samples, steps, progress):
        import vi

        options = self.vi_options(num_samples, steps, progress)
        if keys is None:
            key = self.jax.random.key(0)
            return lambda: (lambda r: (r.params, r.num_steps))(vi.fit(key, target, **options))

        def call():
            result = vi.fit_batch(keys, target, batched_target=batched, **options)
            return result.params, int(result.info.num_steps.max())

        return call

    def svi(self, num_samples):
        import optax
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoNormal

        from experiments import models

        model = models.logistic_regression
        guide = AutoNormal(model, init_scale=INIT_SCALE)
        return SVI(model, guide, optax.adam(LEARNING_RATE), Trace_ELBO(num_particles=num_samples))

    def numpyro_vmap(self, keys, data, batched, num_samples, steps):
        jax, svi = self.jax, self.svi(num_samples)

        def one(rng_key, x, y):
            result = svi.run(rng_key, steps, x, y=y, progress_bar=False)
            return result.params, result.losses

        axis = 0 if batched else None
        run = jax.jit(jax.vmap(one, in_axes=(0, axis, axis)))
        return lambda: (jax.block_until_ready(run(keys, *data)), steps)

    def numpyro_loop(self, name, keys, data, batched, num_samples, steps):
        jax, svi = self.jax, self.svi(num_samples)
        count = min(keys.shape[0], LOOP_FITS[name])
        member = lambda i: (data[0][i], data[1][i]) if batched else data
        if name == LOOPS[2]:
            one = jax.jit(lambda k, x, y: svi.run(k, steps, x, y=y, progress_bar=False).params)
        else:
            bar = name == LOOPS[0]
            one = lambda k, x, y: svi.run(k, steps, x, y=y, progress_bar=bar).params

        def call():
            return jax.block_until_ready([one(keys[i], *member(i)) for i in range(count)]), steps

        call.num_fits = count
        return call

    def blackjax(self, keys, target, batched, num_samples, steps):
        import blackjax
        import jax.numpy as jnp
        import optax

        jax = self.jax
        optimizer = optax.adam(LEARNING_RATE)
        axis = 0 if batched else None
        algorithm = lambda m: blackjax.meanfield_vi(m.logdensity_fn, optimizer, num_samples)

        def init(member):
            state = algorithm(member).init(member.init_position)
            log_scale = jnp.full_like(member.init_position, jnp.log(INIT_SCALE))
            return state._replace(mu=member.init_position, rho=log_scale)

        def step_all(states, step_keys, members):
            def one(state, rng_key, member):
                state, info = algorithm(member).step(rng_key, state)
                return state, info.elbo

            return jax.vmap(one, in_axes=(0, 0, axis))(states, step_keys, members)

        @jax.jit
        def run(keys, members):
            if batched:
                states = jax.vmap(init)(members)
            else:
                one = init(members)
                states = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(keys), *x.shape)), one)
            step_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, steps))(keys), 0, 1)
            return jax.lax.scan(lambda s, k: step_all(s, k, members), states, step_keys)

        return lambda: (jax.block_until_ready(run(keys, target)), steps)

    def floor(self, keys, target, batched, num_samples, steps, sharded):
        """The least a fit does: a scan of draws, the ELBO's value and gradient and one Adam
        update, written for one fit and vmapped."""
        import jax.numpy as jnp
        import optax

        from vi.families.mean_field import MeanFieldParams

        jax = self.jax
        optimizer = optax.adam(LEARNING_RATE)

        def fit_one(rng_key, member):
            def loss_fn(params, eps):
                x = params.loc + jnp.exp(params.log_scale) * eps
                return -jnp.mean(jax.vmap(member.logdensity_fn)(x)) - jnp.sum(params.log_scale)

            def step(carry, step_key):
                params, opt_state = carry
                eps = jax.random.normal(step_key, (num_samples, params.loc.shape[0]))
                value, grad = jax.value_and_grad(loss_fn)(params, eps)
                updates, opt_state = optimizer.update(grad, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), value

            loc = member.init_position
            params = MeanFieldParams(loc, jnp.full_like(loc, jnp.log(INIT_SCALE)))
            carry = (params, optimizer.init(params))
            return jax.lax.scan(step, carry, jax.random.split(rng_key, steps))

        run = jax.jit(jax.vmap(fit_one, in_axes=(0, 0 if batched else None)))
        batch = keys.shape[0]
        if sharded:
            place = lambda: (self.shard(keys, True, batch), self.shard(target, batched, batch))
        else:
            place = lambda: (keys, target)
        return lambda: (jax.block_until_ready(run(*place())), steps)

    # -- requests

    def prepare(self, key, name, setting, batch, num_samples, steps):
        """Builds a contender and makes its first (compiling, untimed) call."""
        self.calls[key] = self.build(name, setting, batch, num_samples, steps)
        return self.run(key)

    def run(self, key):
        call = self.calls[key]
        mark = len(self.clock.spans)
        start, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stderr(io.StringIO()):
            _, steps_run = call()
        wall = time.perf_counter() - start
        return {
            "wall": wall,
            "cores": (time.process_time() - cpu) / wall,  # CPU seconds of all threads / wall
            "compile": self.clock.seconds(mark),
            "steps_run": steps_run,
            "num_fits": getattr(call, "num_fits", None),
        }

    def drop(self):
        self.calls.clear()
        self.jax.clear_caches()
        return {}

    def dots(self, setting, batch, num_samples):
        """The matrix products in vi's compiled batch program: result, lhs, rhs shapes."""
        from vi.fitting.batch import _fit_batch_compiled
        from vi.fitting.spec import split_target

        keys, target, batched, _ = self.problem(setting, batch)
        spec, init_params, draws = self.vi_prepared(keys, target, batched, num_samples, 10)
        arrays, _ = split_target(target)
        lowered = _fit_batch_compiled.lower(
            keys,
            arrays,
            init_params,
            draws,
            None,
            spec=spec,
            target_axis=0 if batched else None,
            hyper_axis=None,
            mesh=None,
        )
        text = lowered.compile().as_text()
        shapes, found = {}, set()
        for line in text.splitlines():
            match = re.match(r"\s*(?:ROOT )?(%\S+) = (\w+\[[\d,]*\])\S* (\w+)\(([^)]*)\)", line)
            if not match:
                continue
            name, shape, op, operands = match.groups()
            shapes[name] = shape
            if op == "dot":
                lhs, rhs = (shapes.get(o.strip(), "?") for o in operands.split(",")[:2])
                found.add((shape, lhs, rhs))
        return {"dots": sorted(found)}

    def kernel(self, setting, batch, num_samples, what, repeats):
        """Seconds for one step's worth of ``what`` over the batch: ``matmul`` (X @ W) or
        ``likelihood`` (the log density's value and gradient at the B*S draws)."""
        import jax.numpy as jnp

        jax = self.jax
        _, target, batched, (xs, _) = self.problem(setting, batch)
        draws = 0.1 * jax.random.normal(jax.random.key(1), (batch, num_samples, DIM))
        axis = 0 if batched else None
        if what == "matmul":
            fn = jax.vmap(lambda x, w: jnp.sum(x @ w.T), in_axes=(axis, 0))
            data = jnp.asarray(xs)
        else:
            mean_ld = lambda member, w: jnp.mean(jax.vmap(member.logdensity_fn)(w))
            value_and_grad = lambda member, w: jax.value_and_grad(mean_ld, argnums=1)(member, w)

            def fn(members, w):
                # Both the value and the gradient are used, as in a fit's step.
                value, grad = jax.vmap(value_and_grad, in_axes=(axis, 0))(members, w)
                return grad + value[:, None, None]

            data = target
        repeat = 20

        # Each repetition depends on the last, so XLA cannot hoist the work out of the loop.
        def body(_, w):
            return w + 1e-12 * jnp.mean(fn(data, w))

        looped = jax.jit(lambda w: jax.lax.fori_loop(0, repeat, body, w))
        jax.block_until_ready(looped(draws))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(looped(draws))
            times.append((time.perf_counter() - start) / repeat)
        return {"seconds": statistics.median(times)}


def worker_main() -> None:
    """Serves requests, one JSON line in and one out, until stdin closes."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else writes to stdout lands in the worker's log
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = getattr(worker, request.pop("cmd"))(**request)
        except Exception as err:
            import traceback

            reply = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")

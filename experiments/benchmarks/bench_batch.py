"""Fits per second of B fits at once: vi's batched fit against NumPyro, BlackJAX and a floor.

Issue 4. Every contender runs 2000 steps of Adam(1e-2) on the reparameterised ELBO of a
mean-field Gaussian with S fresh draws per step (``--samples``, default 8), for B fits of
Bayesian logistic regression (N = 1000, D = 10), in two settings:

- ``datasets``: B datasets of equal shape (``vi.stack_targets``, ``batched_target=True``);
- ``seeds``: one dataset, B keys.

vi, BlackJAX and the floor evaluate the same log-density code (``vi.from_numpyro(...)
.logdensity_fn``, NumPyro's potential); NumPyro runs its own model with an ``AutoNormal``
guide. Contenders:

- ``vi run_batch``: ``vi.fit_batch``'s own compiled program and device placement
  (``vi.fitting.batch.run_prepared``), for fits that cannot stop early: its stopping rule
  runs after every 250-step window as shipped, but ``num_decays`` equals the step count;
- ``vi fit_batch (stops itself)``: ``vi.fit_batch`` as shipped (B <= 16). Its stopping rule
  ends these fits after about 1500 steps; its fits/s is rescaled to 2000 steps;
- the vmapped peers: ``numpyro jit(vmap(svi.run))`` and BlackJAX ``meanfield_vi`` with its
  step vmapped inside a ``lax.scan``;
- ``floor``: hand-written ``jit(vmap(lax.scan(draws, value_and_grad, adam)))``, plus
  ``floor, sharded`` when there are several devices;
- Python loops (default configuration, B <= 16 fits timed, fits/s extrapolated to larger B):
  NumPyro ``svi.run`` with its default progress bar and with ``progress_bar=False`` (both
  compile inside every call, which the loop pays), and a once-compiled ``jit(svi.run)``.

Two process configurations run in worker processes, one request at a time, in rotating
order: ``default`` (``import vi`` before JAX starts, as a user does: one CPU device per
core, ``vi/_cpu_devices.py``) and ``one device`` (``VI_CPU_DEVICES=1``: JAX's own default,
which is what the peers get without vi). On a GPU only the default runs, and B goes up to
10^4.

Compilation is excluded (one untimed call first). On a CPU the large batches are timed over
``STEPS_TIMED_CPU[B]`` steps (every contender's per-step work does not depend on the number
of steps) and fits/s is ``B / (2000 * seconds per step)``.

Usage:
  python experiments/benchmarks/bench_batch.py            # full run (~45 min on 2 CPU cores)
  python experiments/benchmarks/bench_batch.py --quick    # smoke run, < 1 min
"""

import argparse
import contextlib
import datetime
import io
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
NUM_STEPS = 2000
LEARNING_RATE = 1e-2
NUM_DATA, DIM = 1000, 10
INIT_SCALE = 0.1
MAX_DISTINCT_DATASETS = 1024
STEPS_TIMED_CPU = {1: 2000, 16: 2000, 256: 400, 1024: 100}
PEERS = ("numpyro jit(vmap(svi.run))", "blackjax meanfield_vi, vmap in scan")
LOOPS = (
    "numpyro svi.run (progress bar)",
    "numpyro svi.run (progress_bar=False)",
    "numpyro loop over jit(svi.run)",
)
LOOP_FITS = {LOOPS[0]: 2, LOOPS[1]: 2, LOOPS[2]: 16}
ROWS = ("vi run_batch", "vi fit_batch (stops itself)", *PEERS, "floor", "floor, sharded", *LOOPS)


# ------------------------------------------------------------- worker side (imports JAX)


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling (the union of its reported spans)."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self, jax):
        self.spans: list[tuple[float, float]] = []
        jax.monitoring.register_event_time_span_listener(self._record)

    def _record(self, event, start, end, **kwargs):
        if event in self.EVENTS:
            self.spans.append((start, end))

    def since(self, mark: int) -> float:
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self.spans[mark:]):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


class Worker:
    """Builds contenders (zero-argument calls returning ``(output, steps run)``) and times them."""

    def __init__(self):
        import jax
        import optax

        import vi  # noqa: F401  (as a user would, before JAX starts: sets the CPU devices)

        self.jax = jax
        self.optimizer = optax.adam(LEARNING_RATE)  # one object: vi's programs are keyed on it
        self.clock = CompileClock(jax)
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
            "compile": self.clock.since(mark),
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
    sys.path.insert(0, str(ROOT))
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = getattr(worker, request.pop("cmd"))(**request)
        except Exception as err:
            import traceback

            reply = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


# ------------------------------------------------------------- parent side (no JAX)


class WorkerProcess:
    def __init__(self, label, env, log_dir):
        self.label = label
        self.log = open(log_dir / f"{re.sub(r'[^a-z0-9]+', '_', label)}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
            cwd=ROOT,
        )
        self.info = self.ask("info")

    def ask(self, cmd, **kwargs):
        self.process.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} died; see {self.log.name}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.label}: {reply['error']}\n{reply['traceback']}")
        return reply

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.log.close()


def start_workers(log_dir):
    """``default``: JAX as ``import vi`` leaves it (one CPU device per core); on a CPU also
    ``one device``: JAX's own default, which the peers get without vi."""
    env = dict(os.environ)
    env.pop("VI_CPU_DEVICES", None)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    workers = [WorkerProcess("default", env, log_dir)]
    if workers[0].info["backend"] == "cpu" and workers[0].info["num_devices"] > 1:
        workers.append(WorkerProcess("one device", dict(env, VI_CPU_DEVICES="1"), log_dir))
    return workers


def contenders(worker, batch, quick):
    if quick:  # a smoke run: one of each kind of contender, compiled as few times as may be
        return ["vi run_batch", *PEERS, "floor"] if worker.label == "default" else ["vi run_batch"]
    names = ["vi run_batch"]
    if batch <= 16:
        names.append("vi fit_batch (stops itself)")
    names += [*PEERS, "floor"]
    if worker.info["num_devices"] > 1:
        names.append("floor, sharded")
    if batch <= 16 and worker.label == "default":
        names += LOOPS
    return names


def time_grid(workers, settings, batches, num_samples, steps_for, repeats, quick):
    """{(setting, B, config, contender): summary}; calls interleaved in rotating order."""
    results = {}
    for setting in settings:
        for batch in batches:
            jobs = {}
            for worker in workers:
                for name in contenders(worker, batch, quick):
                    key = f"{setting}/{batch}/{name}"
                    first = worker.ask(
                        "prepare",
                        key=key,
                        name=name,
                        setting=setting,
                        batch=batch,
                        num_samples=num_samples,
                        steps=steps_for(batch),
                    )
                    jobs[(worker.label, name)] = (worker, key, first, [])
            order = list(jobs)
            for r in range(repeats):
                for job in order[r % len(order) :] + order[: r % len(order)]:
                    worker, key, _, replies = jobs[job]
                    replies.append(worker.ask("run", key=key))
            for (label, name), (_, _, first, replies) in jobs.items():
                wall = statistics.median(x["wall"] for x in replies)
                num_fits = replies[0]["num_fits"] or batch
                steps_run = replies[0]["steps_run"]
                summary = dict(
                    wall=wall,
                    num_fits=num_fits,
                    steps_run=steps_run,
                    compile_first=first["compile"],
                    compile_each=statistics.median(x["compile"] for x in replies),
                    cores=statistics.median(x["cores"] for x in replies),
                    fits_per_s=num_fits * steps_run / (wall * NUM_STEPS),
                    step_s=wall / steps_run,
                )
                results[(setting, batch, label, name)] = summary
                print(
                    f"  {setting} B={batch} [{label}] {name}: {summary['fits_per_s']:.3g} fits/s "
                    f"({wall:.3f} s for {num_fits} fits x {steps_run} steps; {load()})",
                    file=sys.stderr,
                    flush=True,
                )
            for worker in workers:
                worker.ask("drop")
    return results


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2g}"


def best_peer(results, setting, batch, label):
    return max(results[(setting, batch, label, p)]["fits_per_s"] for p in PEERS)


def print_grid(results, workers, settings, batches, num_samples):
    labels = [w.label for w in workers]
    for setting in settings:
        print(f"\n### {setting}: fits/s of {NUM_STEPS}-step fits, S = {num_samples}\n")
        print("[x] = / the best vmapped peer in the `default` configuration.\n")
        print("| contender | config | " + " | ".join(f"B={b}" for b in batches) + " |")
        print("|---|---|" + "---:|" * len(batches))
        seconds = []
        for name in ROWS:
            for label in labels:
                cells, loop_rate = [], None
                for b in batches:
                    peer = best_peer(results, setting, b, labels[0])
                    r = results.get((setting, b, label, name))
                    if r is not None:
                        rate = r["fits_per_s"]
                        loop_rate = rate
                        cells.append(f"{fmt(rate)} [{rate / peer:.2f}]")
                        per = f"{1e3 * r['wall'] / r['steps_run']:.3g} ms"
                        if name in LOOPS:
                            per = f"{r['wall'] / r['num_fits']:.3g} s/fit"
                        seconds.append((name, label, b, per, r))
                    elif name in LOOPS and loop_rate is not None:
                        cells.append(f"{fmt(loop_rate)}* [{loop_rate / peer:.2f}]")
                    else:
                        cells.append("")
                if any(cells):
                    print(f"| {name} | {label} | " + " | ".join(cells) + " |")
        print("\n\\* extrapolated: a Python loop's fits/s does not depend on B.\n")
        print(
            "Time of one timed call: per step of the whole batch (loops: per fit), steps run, "
            "cores used (the worker's CPU seconds over wall seconds), compile s of the first "
            "call and of each later call:\n"
        )
        print("| contender | config | B | time | steps | cores | compile first | compile each |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for name, label, b, per, r in seconds:
            print(
                f"| {name} | {label} | {b} | {per} | {r['steps_run']} | {r['cores']:.2f} | "
                f"{r['compile_first']:.2f} | {r['compile_each']:.2f} |"
            )


def print_targets(results, workers, settings, batches):
    """vi as shipped (``default``) against the best vmapped peer in any configuration."""
    labels = [w.label for w in workers]
    print("\n### Target (issue 4): vi ≥ 1.7x the best vmapped peer at B ≥ 16, by default\n")
    print(
        "| setting | B | best vmapped peer (config) | vi fit_batch, default | ratio | "
        "vi, one device | floor | floor, sharded | met |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for setting in settings:
        for b in batches:
            rate = lambda label, name, at=(setting, b): results.get((*at, label, name), {}).get(
                "fits_per_s"
            )
            peers = {(p, x): rate(x, p) for p in PEERS for x in labels if rate(x, p)}
            (peer, where), best = max(peers.items(), key=lambda item: item[1])
            vi_default = rate(labels[0], "vi run_batch")
            one = rate(labels[-1], "vi run_batch") if len(labels) > 1 else None
            floor = max(r for x in labels if (r := rate(x, "floor")))
            sharded = rate(labels[0], "floor, sharded")
            ratio = vi_default / best
            met = "(B < 16)" if b < 16 else ("yes" if ratio >= 1.7 else "no")
            print(
                f"| {setting} | {b} | {fmt(best)} ({peer.split()[0]}, {where}) | "
                f"{fmt(vi_default)} | {ratio:.2f} | {fmt(one) if one else ''} | {fmt(floor)} | "
                f"{fmt(sharded) if sharded else ''} | {met} |"
            )


def progress_overhead(worker, cases, num_samples, repeats, max_steps):
    """The same fit_batch / fit call with progress=True and progress=False."""
    print(
        f"\n### Progress bar overhead ({worker.label}, seeds, S = {num_samples}, max_steps = "
        f"{max_steps}, vi's stopping rule on; target ≤ 5 %; {load()} at start)\n"
    )
    print("| call | B | steps run | progress=True s | progress=False s | overhead | met |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for call, batch in cases:
        keys = []
        for flag in ("True", "False"):
            key = f"progress/{call}/{batch}/{flag}"
            name = f"vi {call}, progress={flag}"
            worker.ask(
                "prepare",
                key=key,
                name=name,
                setting="seeds",
                batch=batch,
                num_samples=num_samples,
                steps=max_steps,
            )
            keys.append(key)
        walls = {key: [] for key in keys}
        for r in range(repeats):
            for key in keys[r % 2 :] + keys[: r % 2]:
                reply = worker.ask("run", key=key)
                walls[key].append(reply["wall"])
        on, off = (statistics.median(walls[key]) for key in keys)
        print(
            f"| vi.{call} | {batch} | {reply['steps_run']} | {on:.3f} | {off:.3f} | "
            f"{100 * (on / off - 1):+.1f} % | {'yes' if on / off - 1 <= 0.05 else 'no'} |"
        )
        worker.ask("drop")


def profile(workers, settings, batches, num_samples, repeats, steps, quick=False):
    """Where the time goes, per setting and B: vi's whole step against the likelihood alone."""
    with_matmul = not quick
    print(f"\n### Profile: S = {num_samples} ({load()} at start)\n")
    print(
        f"vi: `vi run_batch` timed over {steps} steps. likelihood: the NumPyro log density's "
        "value and gradient at all B·S draws, nothing else, in a loop on one device. matmul: "
        "X @ W alone. µs per fit-step = time per step / B.\n"
    )
    print(
        "| config | setting | B | vi ms/step | vi µs/fit-step | likelihood µs/fit-step | "
        "matmul µs/fit-step | likelihood share of vi |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for worker in workers:
        for setting in settings:
            for b in batches:
                key = f"profile/{setting}/{b}"
                worker.ask(
                    "prepare",
                    key=key,
                    name="vi run_batch",
                    setting=setting,
                    batch=b,
                    num_samples=num_samples,
                    steps=steps,
                )
                runs = [worker.ask("run", key=key)["wall"] for _ in range(repeats)]
                vi_s = statistics.median(runs) / steps
                kernel = lambda what, worker=worker, setting=setting, b=b: worker.ask(
                    "kernel",
                    setting=setting,
                    batch=b,
                    what=what,
                    num_samples=num_samples,
                    repeats=repeats,
                )["seconds"]
                lik = kernel("likelihood")
                matmul = kernel("matmul") if with_matmul else float("nan")
                print(
                    f"| {worker.label} | {setting} | {b} | {1e3 * vi_s:.3g} | "
                    f"{1e6 * vi_s / b:.3g} | {1e6 * lik / b:.3g} | {1e6 * matmul / b:.3g} | "
                    f"{lik / vi_s:.0%} |"
                )
                worker.ask("drop")
    b = batches[min(2, len(batches) - 1)]
    print(
        "\nMatrix products in vi's compiled batch program (`result = lhs . rhs`), "
        f"B = {b}, S = {num_samples}:\n"
    )
    for setting in ("seeds",) if quick else ("seeds", "datasets"):
        dots = workers[0].ask("dots", setting=setting, batch=b, num_samples=num_samples)["dots"]
        print(f"- {setting}: " + "; ".join(f"`{r} = {x} . {y}`" for r, x, y in dots))
    workers[0].ask("drop")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, < 1 min")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=8, help="draws per step, S (default 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per contender")
    parser.add_argument("--batches", default=None, help="comma-separated B, e.g. 1,16,256")
    parser.add_argument("--steps", type=int, default=None, help="steps timed at every B")
    parser.add_argument("--only", choices=("grid", "progress", "profile"), default=None)
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return

    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_batch_"))
    workers = start_workers(log_dir)
    info = workers[0].info
    on_gpu = info["backend"] != "cpu"
    quick, s = args.quick, args.samples
    if quick:
        settings, batches, repeats = ("seeds",), [4], args.repeats or 1
        steps_for = lambda b: 20
    else:
        settings, repeats = ("datasets", "seeds"), args.repeats or 3
        batches = [1, 16, 256, 1024, 10_000] if on_gpu else [1, 16, 256, 1024]
        steps_for = (lambda b: NUM_STEPS) if on_gpu else (lambda b: STEPS_TIMED_CPU.get(b, 200))
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    if args.steps:
        steps_for = lambda b: args.steps
    profile_batches = batches if quick or args.batches else sorted({1, 4, 16, 64, *batches})
    middle = [b for b in batches if b > 1][:2] or batches[:1]

    print("## bench_batch: fits/s of many fits at once (issue 4)\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- machine: {platform.machine()}, nproc = {os.cpu_count()}, {load()} at start")
    print(
        f"- jax {info['jax']}, backend {info['backend']}; configurations: "
        + "; ".join(f"{w.label} ({w.info['num_devices']} device(s))" for w in workers)
    )
    print(
        f"- steps timed: {', '.join(f'B={b}: {steps_for(b)}' for b in batches)}; median of "
        f"{repeats} timed calls; worker logs in {log_dir}"
    )
    try:
        if args.only in (None, "grid"):
            results = time_grid(workers, settings, batches, s, steps_for, repeats, quick)
            print(f"\n- grid timed; {load()}")
            print_grid(results, workers, settings, batches, s)
            print_targets(results, workers, settings, batches)
        if args.only in (None, "progress"):
            max_steps = 200 if quick else NUM_STEPS
            cases = [("fit_batch", b) for b in middle] + ([] if quick else [("fit", 1)])
            progress_overhead(workers[0], cases, s, 2 if quick else repeats + 1, max_steps)
        if args.only in (None, "profile"):
            steps = 20 if quick else args.steps or 100
            profile(
                workers[: 1 if quick else None], settings, profile_batches, s, repeats, steps, quick
            )
    finally:
        print(f"\n- {load()} at end")
        for worker in workers:
            worker.close()


if __name__ == "__main__":
    main()

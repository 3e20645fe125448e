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

Two process configurations run in worker processes (``batch_worker.py``), one request at
a time, in rotating order: ``default`` (``vi.set_cpu_devices()`` before JAX starts, as a user
does: one CPU device per core, ``vi/devices.py``) and ``one device`` (``JAX_NUM_CPU_DEVICES=1``:
JAX's own default, which is what the peers get without vi). On a GPU only the default runs, and B goes up to
10^4.

Compilation is excluded (one untimed call first). On a CPU the large batches are timed over
``STEPS_TIMED_CPU[B]`` steps (every contender's per-step work does not depend on the number
of steps) and fits/s is ``B / (2000 * seconds per step)``.

Usage:
  python experiments/benchmarks/bench_batch.py            # full run (~45 min on 2 CPU cores)
  python experiments/benchmarks/bench_batch.py --quick    # smoke run, < 1 min
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.benchmarks.batch_worker import LOOPS, PEERS, worker_main  # noqa: E402

NUM_STEPS = 2000
STEPS_TIMED_CPU = {1: 2000, 16: 2000, 256: 400, 1024: 100}
ROWS = ("vi run_batch", "vi fit_batch (stops itself)", *PEERS, "floor", "floor, sharded", *LOOPS)


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
    """``default``: JAX as ``vi.set_cpu_devices()`` sets it (one CPU device per core); on a CPU also
    ``one device``: JAX's own default, which the peers get without vi."""
    env = dict(os.environ)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    workers = [WorkerProcess("default", env, log_dir)]
    if workers[0].info["backend"] == "cpu" and workers[0].info["num_devices"] > 1:
        workers.append(WorkerProcess("one device", dict(env, JAX_NUM_CPU_DEVICES="1"), log_dir))
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

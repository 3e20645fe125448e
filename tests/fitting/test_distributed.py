"""A sweep spread over two processes on loopback equals one process's sweep."""

import itertools
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi
from vi.fitting import distributed
from vi.fitting.distributed import gather, process_share, share_indices

_TIMEOUT_S = 120
NUM_MEMBERS = 5  # not a multiple of the two processes: their shares differ in size

_SWEEP = """
import jax
import jax.numpy as jnp
import numpy as np
import optax
import vi


# The learning rate is set per member (optax.inject_hyperparams); one method object, so that
# every fit_batch of the sweep compiles once.
SWEEP_METHOD = vi.Stochastic(optax.inject_hyperparams(optax.adam)(learning_rate=1e-2))


def logdensity(mean, x):
    return -0.5 * jnp.sum(((x - mean) / jnp.asarray([0.5, 1.0, 2.0])) ** 2)


def sweep(num_members):
    \"\"\"Two sweeps: over seeds on one target, and over datasets (means) and learning rates.\"\"\"
    keys = jax.random.split(jax.random.key(0), num_members)
    target = vi.from_logdensity(lambda x: logdensity(1.0, x), jnp.zeros(3))
    # A dataset's arrays ride in a Partial, so that targets stack.
    means = jnp.linspace(-2.0, 2.0, num_members)[:, None] * jnp.ones(3)
    datasets = [vi.Target(jax.tree_util.Partial(logdensity, m), jnp.zeros(3)) for m in means]
    rates = jnp.asarray([0.02, 0.05, 0.01, 0.03, 0.04])[:num_members]
    return keys, target, vi.stack_targets(datasets), rates


def fit_sweep(keys, target, datasets, rates):
    over_data = vi.fit_batch(
        keys,
        datasets,
        batched_target=True,
        method=SWEEP_METHOD,
        hyperparameters={"learning_rate": rates},
    )
    return vi.fit_batch(keys, target, init_radius=2.0), over_data


def summary(seeds, over_data):
    return {
        **{f"seeds_{k}": np.asarray(v) for k, v in seeds.params._asdict().items()},
        **{f"seeds_{k}": np.asarray(v) for k, v in seeds.info._asdict().items()},
        **{f"data_{k}": np.asarray(v) for k, v in over_data.params._asdict().items()},
        **{f"data_{k}": np.asarray(v) for k, v in over_data.info._asdict().items()},
        "data_mean": np.asarray(over_data.target.logdensity_fn.args[0]),
    }
"""

# Each child joins the runtime before any JAX computation (importing vi is none),
# then runs the sweep's code on its share. A process that fails exits at once:
# on a normal exit, JAX's runtime would wait minutes for the peer at a barrier.
_INITIALIZE = """
import os
import sys
import traceback

import jax

import vi


def exit_at_once(*error):
    traceback.print_exception(*error)
    sys.stderr.flush()
    os._exit(1)


sys.excepthook = exit_at_once
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# Two CPU devices each, so that each process also shards its share, as on a host with
# several devices.
vi.set_cpu_devices(2)
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=2,
    process_id=process_id,
    initialization_timeout=60,
)
"""

_FIT_SHARE = """
from vi.fitting import gather, process_share

keys, target, datasets, rates = sweep(NUM_MEMBERS)
keys, datasets, rates = process_share((keys, datasets, rates))
seeds, over_data = fit_sweep(keys, target, datasets, rates)
seeds, over_data = gather(seeds, NUM_MEMBERS), gather(over_data, NUM_MEMBERS)
devices = {"process_count": jax.process_count(), "local_device_count": jax.local_device_count()}
np.savez(out, **devices, **summary(seeds, over_data))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two_processes(tmp_path):
    """Starts the two processes; returns them, their result files and their logs."""
    script = f"{_INITIALIZE}{_SWEEP}\nNUM_MEMBERS = {NUM_MEMBERS}\n{_FIT_SHARE}"
    # No device count from the environment: each process asks for its own two.
    ours = ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")
    env = {**{k: v for k, v in os.environ.items() if k not in ours}, "JAX_PLATFORMS": "cpu"}
    port = _free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    children = []
    for i in range(2):
        with open(logs[i], "w") as log:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", script, str(i), str(port), str(outs[i])],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return children, outs, logs


def _wait(children, logs) -> None:
    """Waits for both processes. A process whose peer died waits for it for minutes,
    so the first failure, or a hang past the deadline, stops both."""
    deadline = time.monotonic() + _TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            codes = [child.poll() for child in children]
            if all(code == 0 for code in codes) or any(code for code in codes):
                break
            time.sleep(0.1)
    finally:
        for child in children:
            child.kill()
            child.wait()
    failed = [i for i, child in enumerate(children) if child.returncode != 0]
    assert not failed, "\n".join(
        f"process {i} exited with {children[i].returncode}:\n{logs[i].read_text()[-2000:]}"
        for i in failed
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The sweep gathered by each of two processes, and fitted whole by this one."""
    children, outs, logs = _start_two_processes(tmp_path_factory.mktemp("distributed"))
    try:
        namespace = {}
        exec(_SWEEP, namespace)
        results = namespace["fit_sweep"](*namespace["sweep"](NUM_MEMBERS))
    finally:
        _wait(children, logs)
    return [dict(np.load(out)) for out in outs], namespace["summary"](*results), results


@pytest.mark.heavy
def test_every_process_gathers_the_whole_sweep(runs):
    gathered, whole, _ = runs
    for g in gathered:
        assert (g["process_count"], g["local_device_count"]) == (2, 2)
    for name, value in whole.items():
        assert gathered[0][name].shape == value.shape, name
        np.testing.assert_array_equal(gathered[1][name], gathered[0][name], err_msg=name)


@pytest.mark.parametrize("sweep", ["seeds", "data"])
@pytest.mark.heavy
def test_two_processes_fit_the_sweep_as_one_does(runs, sweep):
    # Each member's loop runs to its own end on its own inputs, so the split over
    # processes changes nothing but rounding: a share's vmap is narrower than the
    # whole sweep's, which can move a fit by an ulp or so.
    gathered, whole, _ = runs
    for name, value in whole.items():
        if not name.startswith(sweep):
            continue
        if np.issubdtype(value.dtype, np.integer):
            np.testing.assert_array_equal(gathered[0][name], value, err_msg=name)
        else:
            np.testing.assert_allclose(gathered[0][name], value, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.heavy
def test_members_come_back_in_the_sweep_order(runs):
    gathered, _, _ = runs
    means = np.linspace(-2.0, 2.0, NUM_MEMBERS)
    np.testing.assert_array_equal(gathered[0]["data_mean"][:, 0], means)
    np.testing.assert_allclose(gathered[0]["data_loc"][:, 0], means, atol=0.05)


# The share and gather logic for other process counts, simulated in one process.


@pytest.mark.parametrize(("batch_size", "process_count"), [(5, 2), (7, 3), (6, 3), (3, 3)])
def test_shares_cover_the_sweep_once_and_gather_restores_its_order(
    monkeypatch, batch_size, process_count
):
    sweep = {"x": jnp.arange(batch_size * 2.0).reshape(batch_size, 2), "i": np.arange(batch_size)}
    monkeypatch.setattr(jax, "process_count", lambda: process_count)
    shares = []
    for p in range(process_count):
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        shares.append(process_share(sweep))
        np.testing.assert_array_equal(shares[-1]["i"], share_indices(batch_size))
    members = np.sort(np.concatenate([share["i"] for share in shares]))
    np.testing.assert_array_equal(members, np.arange(batch_size))

    longest = -(-batch_size // process_count)
    leaf_number = itertools.count()

    def allgather(leaf):  # what every process would contribute for this leaf, stacked
        assert len(leaf) == longest, "gather pads a short share to the longest"
        k = next(leaf_number)
        padded = [np.asarray(jax.tree.leaves(share)[k]) for share in shares]
        return np.stack([np.concatenate([x, x[-1:]])[:longest] for x in padded])

    monkeypatch.setattr(distributed.multihost_utils, "process_allgather", allgather)
    gathered = gather(shares[-1], batch_size)
    for name in sweep:
        np.testing.assert_array_equal(gathered[name], sweep[name])


@pytest.mark.heavy
def test_one_process_has_the_whole_sweep_as_its_share(runs):
    keys = jax.random.split(jax.random.key(0), NUM_MEMBERS)
    assert process_share(keys) is keys
    for batch in runs[2]:
        whole = gather(batch, NUM_MEMBERS)
        assert isinstance(whole, vi.BatchFitResult) and len(whole) == NUM_MEMBERS
        assert whole.params is batch.params and whole.target is batch.target


def test_errors_name_the_problem(monkeypatch):
    with pytest.raises(ValueError, match="same leading batch axis"):
        process_share({"a": jnp.zeros(3), "b": jnp.zeros(4)})
    with pytest.raises(ValueError, match="same leading batch axis"):
        process_share(jnp.zeros(()))
    with pytest.raises(ValueError, match=r"call jax\.distributed\.initialize"):
        gather(jnp.zeros(4), 8)
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    with pytest.raises(ValueError, match="cannot be spread over 3 processes"):
        share_indices(2)
    with pytest.raises(ValueError, match="fits 2 of the 4 members") as error:
        gather(jnp.zeros(4), 4)
    assert "initialize" not in str(error.value)
    collectives = jax.config.jax_cpu_collectives_implementation
    jax.config.update("jax_cpu_collectives_implementation", None)
    try:
        with pytest.raises(RuntimeError, match="CPU collectives are off"):
            gather(jnp.zeros(2), 4)
    finally:
        jax.config.update("jax_cpu_collectives_implementation", collectives)

"""Ctrl-C during a fit: held until the compiled call returns, then KeyboardInterrupt."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import pytest

import vi
from vi.fitting.interrupts import held_interrupts


@pytest.fixture
def python_handler():
    """Python's own SIGINT handler, as in a script (a test runner may install another)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_is_held_to_the_end_of_the_block(python_handler, capsys):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the signal")
    assert reached == ["after the signal"]
    assert "interrupted; stopping when the compiled call in progress returns" in (
        capsys.readouterr().err
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_check_raises_the_held_interrupt_and_a_second_ctrl_c_raises_at_once(python_handler):
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts() as check:
            check()  # nothing held yet
            os.kill(os.getpid(), signal.SIGINT)
            check()
            pytest.fail("check() did not raise the held interrupt")
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            reached.append(2)
    assert reached == [1]


def test_a_handler_of_the_users_own_is_left_alone():
    seen = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with held_interrupts():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.slow
def test_off_the_main_thread_nothing_is_held(python_handler):
    errors = []

    def fit_in_thread():
        try:
            target = vi.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
            vi.fit(jax.random.key(0), target, method=vi.Stochastic(max_steps=50))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=fit_in_thread)
    thread.start()
    thread.join()
    assert errors == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


LOOP = """\
import signal
import sys

# Python's own handler, as a script run from a terminal has (a child of a background job
# starts with SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
import jax, jax.numpy as jnp
import vi

print("ready", flush=True)
for i in range(10**6):  # a new function each time: each call compiles
    target = vi.from_logdensity(lambda x, d=float(i): -0.5 * jnp.sum((x - d) ** 2), jnp.zeros(3))
    if sys.argv[1] == "batch":
        keys = jax.random.split(jax.random.key(i), 4)
        vi.fit_batch(keys, target, method=vi.Stochastic(max_steps=200), chunk_size=2)
    else:
        vi.fit(jax.random.key(i), target, method=vi.Stochastic(max_steps=200))
"""


@pytest.mark.heavy
@pytest.mark.parametrize("entry", ["fit", "batch"])
def test_ctrl_c_at_random_moments_of_a_users_loop_never_crashes(tmp_path, entry):
    """Before the hold, 6 of 10 such interrupts of a loop of vi.fit ended in SIGSEGV."""
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(LOOP))
    rng = random.Random(0)
    codes = []
    for _ in range(10):
        with subprocess.Popen(
            [sys.executable, "-W", "ignore", str(script), entry],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout.readline().strip() == "ready"
            threading.Event().wait(rng.uniform(0.3, 4.0))
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=120)
        codes.append(process.returncode)
        assert process.returncode == -signal.SIGINT, output[-2000:]
        assert output.rstrip().endswith("KeyboardInterrupt"), output[-2000:]
    assert codes == [-signal.SIGINT] * 10

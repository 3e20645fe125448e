"""Ctrl-C held until the compiled work in progress returns.

A ``KeyboardInterrupt`` raised while JAX is inside a compilation or a dispatch leaves
jaxlib in a state that can crash the interpreter at exit (SIGSEGV, in 6 of 10 tries of a
script that loops ``vi.fit`` and is interrupted at random moments; none of 10 with the
interrupt held). XLA cannot stop a program midway anyway, so ``held_interrupts`` lets the
first Ctrl-C wait for the call in progress, then raises ``KeyboardInterrupt`` as usual; a
second Ctrl-C raises at once. It does so only on the main thread, and only where Python's
own handler is installed: a program that handles SIGINT itself keeps its handler.
"""

import contextlib
import signal
import sys
import threading

_holding = [False]


@contextlib.contextmanager
def held_interrupts():
    """Holds a Ctrl-C (SIGINT) over the block, raising ``KeyboardInterrupt`` at its end.

    Yields:
      ``check()``, which raises the held ``KeyboardInterrupt`` at once: for drivers that
      return to Python between compiled calls (a fit in chunks, a batch in chunks).
    """
    if (
        _holding[0]
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: None
        return
    received = []

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        print(
            "\nvi: interrupted; stopping when the compiled call in progress returns "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def check():
        if received:
            raise KeyboardInterrupt

    _holding[0] = True
    signal.signal(signal.SIGINT, hold)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _holding[0] = False
    check()

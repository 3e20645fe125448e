"""How the stochastic loop groups its steps: windows for the stopping rule, and blocks
inside a window that keep each step's work on one thread on CPU.
"""


def _divisor_near(n: int, most: int) -> int | None:
    """The largest divisor of ``n`` in ``(most // 2, most]``, or None."""
    return next((d for d in range(most, most // 2, -1) if n % d == 0), None)


def window_length(check_every: int, max_steps: int) -> int:
    """Steps per window: ``check_every``, or the longest divisor of ``max_steps`` down to
    half of it, so that the last window is full (a partial one computes steps it discards)."""
    longest = min(check_every, max_steps)
    return _divisor_near(max_steps, longest) or longest


# XLA:CPU runs a loop body's operations one after another, on the calling thread, only
# when every buffer they touch holds at most this many bytes; otherwise it hands ready
# operations to its thread pool, which costs microseconds per step of a small model.
_SMALL_BUFFER_BYTES = 512


def block_length(window: int, itemsize: int) -> int:
    """Steps per innermost scan: their objective values must fit in a small buffer.

    A divisor of ``window`` when one lies between half the most and the most that fit;
    otherwise the window is split into equal blocks that cover it with a few steps to spare
    (computed, not taken).
    """
    most = max(1, _SMALL_BUFFER_BYTES // itemsize)
    if window <= most:
        return window
    num_blocks = -(-window // most)
    return _divisor_near(window, most) or -(-window // num_blocks)

"""Progress of compiled fits, reported from inside the loop by host callbacks.

The compiled loop calls ``report_progress`` every chunk of steps
(``vi.fitting.loop``); it forwards to whichever bar is open. Because the callback is one
module-level function, opening a new bar never changes the compiled program.
A bar is only compiled in when asked for, so fits without one pay nothing.
"""

import sys
import time

_open_bar = None


def report_progress(step, num_running, shard=0) -> None:
    """Host side of the progress callback; a sharded batch reports once per shard."""
    if _open_bar is not None:
        _open_bar.update(int(step), int(num_running), int(shard))


def report_every(max_steps: int) -> int:
    """Steps between reports: each makes the compiled loop wait for the host (~0.4 ms on a
    CPU), so every 5 % of ``max_steps``, and no more often than every 500 steps."""
    return max(500, max_steps // 20)


def progress_enabled(progress: bool | None) -> bool:
    """Resolves ``progress=None`` to on for interactive terminals, off otherwise."""
    if progress is None:
        return sys.stderr.isatty()
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    return progress


class ProgressBar:
    """A one-line progress bar on stderr (tqdm's when tqdm is installed).

    Use as a context manager around a compiled fit call.
    """

    def __init__(self, max_steps: int, num_fits: int = 1, *, description: str = "fit"):
        self.max_steps = max_steps
        self.num_fits = num_fits
        self.description = description
        self._tqdm = None
        self._start = self._drawn = 0.0
        self._shards: dict[int, tuple[int, int]] = {}
        self._final: str | None = None

    def __enter__(self):
        global _open_bar
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._tqdm = tqdm(
                total=self.max_steps,
                desc=self.description,
                unit="step",
                leave=False,
                mininterval=0.1,
            )
        self._start = time.perf_counter()
        self._drawn = float("-inf")
        _open_bar = self
        return self

    def update(self, step: int, num_running: int, shard: int = 0) -> None:
        """Records that ``shard`` reached ``step`` with ``num_running`` fits running; the
        bar shows the slowest running shard's step and the running fits of all shards."""
        self._shards[shard] = (min(step, self.max_steps), num_running)
        steps = [s for s, n in self._shards.values() if n > 0]
        step = min(steps) if steps else max(s for s, _ in self._shards.values())
        # Capped: a batch padded to fill its devices runs copies of its last member.
        num_running = min(sum(n for _, n in self._shards.values()), self.num_fits)
        status = f"{num_running}/{self.num_fits} running" if self.num_fits > 1 else ""
        # The compiled loop waits for this callback: redraw at most every 0.1 s.
        if self._tqdm is not None:
            if status:
                self._tqdm.set_postfix_str(status, refresh=False)
            self._tqdm.update(step - self._tqdm.n)
        elif time.perf_counter() - self._drawn >= 0.1:
            self._drawn = time.perf_counter()
            rate = step / max(self._drawn - self._start, 1e-9)
            print(
                f"\r{self.description}: step {step}/{self.max_steps} {status} ({rate:.0f} steps/s)",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def finish(self, step: int, reason: str) -> None:
        """Ends the bar at the step where the fit stopped, with why (printed on exit)."""
        elapsed = time.perf_counter() - self._start
        self._final = f"{self.description}: stopped at step {step} ({reason}) in {elapsed:.1f} s"

    def __exit__(self, *exc):
        global _open_bar
        _open_bar = None
        if self._tqdm is not None:
            self._tqdm.close()
        if self._final is not None:
            print(
                ("" if self._tqdm is not None else "\r") + self._final, file=sys.stderr, flush=True
            )
        elif self._tqdm is None:
            print(file=sys.stderr, flush=True)
        return False

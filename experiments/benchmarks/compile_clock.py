"""Time spent compiling, from JAX's own monitoring events (for benchmarks)."""

import jax
import numpy as np

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Seconds spent tracing, lowering and compiling, as the union of JAX's reported spans."""

    def __init__(self):
        self.spans: list[tuple[float, float]] = []
        self.events: list[str] = []
        jax.monitoring.register_event_time_span_listener(self._record)

    def _record(self, event, start, end, **kwargs):
        if event in COMPILE_EVENTS:
            self.spans.append((start, end))
            self.events.append(event)

    def seconds(self, since: int) -> float:
        total, reach = 0.0, -np.inf
        for start, end in sorted(self.spans[since:]):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def count(self, since: int) -> int:
        """How many programs were compiled (backend compilations) since span ``since``."""
        return sum(1 for event in self.events[since:] if event == COMPILE_EVENTS[-1])

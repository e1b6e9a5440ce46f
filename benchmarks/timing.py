"""The one way a benchmark times its variants: round-robin, so a machine that speeds up or slows
down during the run (other load, frequency scaling) affects every variant alike, then the median
of each. Standard library only, like ``report_json``."""

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(
    calls: Mapping[str, Callable[[], object]], rounds: int, *, warmup: int = 1
) -> dict[str, float]:
    """Median wall-clock seconds of one call of each of ``calls``, by name.

    ``warmup`` untimed rounds come first; then each of ``rounds`` rounds calls every variant
    once, in the mapping's order.

    Raises:
        ValueError: no calls, ``rounds < 1`` or ``warmup < 0`` (the value named).
    """
    if not calls:
        raise ValueError("interleaved_medians needs at least one call to time")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}

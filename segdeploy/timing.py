"""Latency measurement like trtexec: warm-up, then timed iterations (a count or a time budget).

The harness is a bare loop around the call: one `perf_counter_ns()` pair per iteration
and an append into a preallocated list, so its own cost is a fraction of a microsecond
per iteration (see `scripts/measure_harness_overhead.py`).
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from segdeploy.errors import UsageError


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one call in milliseconds; throughput in images per second."""

    iterations: int
    batch: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    throughput: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms, batch: int = 1) -> LatencyStats:
    """Statistics of per-call latencies (ms). Percentiles interpolate linearly between ranks."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise UsageError("no latency samples: run at least one timed iteration")
    p90, p95, p99 = np.percentile(samples, [90, 95, 99])
    mean = float(samples.mean())
    return LatencyStats(
        iterations=int(samples.size),
        batch=batch,
        min=float(samples.min()),
        mean=mean,
        median=float(np.median(samples)),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        max=float(samples.max()),
        std=float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        throughput=1000.0 * batch / mean if mean > 0 else float("inf"),
    )


def time_calls(
    call: Callable[[], object],
    *,
    warmup: int = 10,
    warmup_seconds: float | None = None,
    iterations: int | None = 100,
    duration: float | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
    on_sample: Callable[[], None] | None = None,
) -> list[float]:
    """Warm up, then time `call` `iterations` times or for `duration` seconds; returns ms per call.

    `on_sample` runs after each timed call (not after warm-up calls), outside the timed region.
    """
    if iterations is None and duration is None:
        raise UsageError("give --iterations or --duration")
    if (iterations is not None and iterations < 1) or (duration is not None and duration <= 0):
        raise UsageError("--iterations must be >= 1 and --duration > 0")
    _warm_up(call, warmup, warmup_seconds, clock)
    collecting = gc.isenabled()
    gc.disable()  # a collection pause inside a timed call is the harness's noise, not the model's
    try:
        if duration is None:
            return _fixed_count(call, iterations, clock, on_sample)
        return _time_budget(call, duration, iterations, clock, on_sample)
    finally:
        if collecting:
            gc.enable()


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    *,
    rounds: int = 5,
    warmup: int = 10,
    warmup_seconds: float | None = None,
    iterations: int | None = 100,
    duration: float | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
    on_sample: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[float]]:
    """Time several calls in `rounds`, rotating their order each round, and pool the samples.

    Timing one target after another lets whatever ran before (another runtime's spinning
    thread pool, a warm or cold cache, the machine's load drifting) bias a single target;
    rotation spreads those effects over all of them. Iterations and duration are split
    across rounds; warm-up is repeated (divided) in every round.
    """
    names = list(calls)
    rounds = max(1, min(rounds, iterations or rounds))
    samples: dict[str, list[float]] = {name: [] for name in names}
    per_round = None if iterations is None else [iterations // rounds + (r < iterations % rounds) for r in range(rounds)]
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            samples[name] += time_calls(
                calls[name],
                warmup=max(1, warmup // rounds) if warmup else 0,
                warmup_seconds=None if warmup_seconds is None else warmup_seconds / rounds,
                iterations=None if per_round is None else per_round[r],
                duration=None if duration is None else duration / rounds,
                clock=clock,
                on_sample=(on_sample or {}).get(name),
            )
    return samples


def _warm_up(call, count: int, seconds: float | None, clock) -> None:
    if seconds is not None:
        end = clock() + int(seconds * 1e9)
        while clock() < end:
            call()
        return
    for _ in range(count):
        call()


def _fixed_count(call, iterations: int, clock, on_sample=None) -> list[float]:
    samples = [0] * iterations
    for i in range(iterations):
        start = clock()
        call()
        samples[i] = clock() - start
        if on_sample is not None:
            on_sample()
    return [s / 1e6 for s in samples]


def _time_budget(call, duration: float, at_least: int | None, clock, on_sample=None) -> list[float]:
    samples: list[int] = []
    end = clock() + int(duration * 1e9)
    while clock() < end or len(samples) < (at_least or 1):
        start = clock()
        call()
        samples.append(clock() - start)
        if on_sample is not None:
            on_sample()
    return [s / 1e6 for s in samples]

"""The latency statistics against a known distribution, timed by a fake clock (no real sleeps)."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.timing import summarize, time_calls
from segdeploy.errors import UsageError


class FakeClock:
    """A nanosecond clock that each call of the timed function advances by the next known latency."""

    def __init__(self, latencies_ms):
        self.now = 0
        self.latencies = list(latencies_ms)
        self.calls = 0

    def __call__(self) -> int:
        return self.now

    def work(self) -> None:
        self.now += int(self.latencies[self.calls % len(self.latencies)] * 1e6)
        self.calls += 1


def test_time_calls_measures_each_call_exactly():
    known = [5.0, 1.0, 3.0, 2.0, 4.0]
    clock = FakeClock([100.0] * 3 + known)  # three warm-up calls of 100 ms are not counted
    samples = time_calls(clock.work, warmup=3, iterations=5, clock=clock)
    assert samples == known


def test_duration_budget_runs_until_time_is_up():
    clock = FakeClock([10.0])
    samples = time_calls(clock.work, warmup=0, iterations=None, duration=0.095, clock=clock)
    assert len(samples) == 10  # 10 ms calls fill a 95 ms budget after the 10th starts at 90 ms
    assert set(samples) == {10.0}


def test_summary_of_a_known_distribution():
    samples = np.arange(1, 101, dtype=float)  # 1..100 ms
    stats = summarize(samples, batch=4)
    assert (stats.min, stats.max, stats.median, stats.mean) == (1.0, 100.0, 50.5, 50.5)
    assert stats.p90 == pytest.approx(90.1) and stats.p95 == pytest.approx(95.05) and stats.p99 == pytest.approx(99.01)
    assert stats.std == pytest.approx(29.011491975882016)  # sample std of 1..100
    assert stats.throughput == pytest.approx(4 * 1000 / 50.5)


def test_bad_arguments():
    with pytest.raises(UsageError):
        summarize([])
    with pytest.raises(UsageError):
        time_calls(lambda: None, iterations=None, duration=None)
    with pytest.raises(UsageError):
        time_calls(lambda: None, iterations=0)


def test_interleaved_rounds_rotate_order_and_split_iterations():
    from segdeploy.timing import time_interleaved

    clock = FakeClock([1.0])
    order: list[str] = []

    def make(name, ms):
        def call():
            order.append(name)
            clock.now += int(ms * 1e6)
        return call

    samples = time_interleaved({"a": make("a", 1.0), "b": make("b", 2.0), "c": make("c", 3.0)},
                               rounds=3, warmup=0, iterations=7, clock=clock)
    assert samples == {"a": [1.0] * 7, "b": [2.0] * 7, "c": [3.0] * 7}
    # 7 iterations over 3 rounds: 3, 2, 2; the first target of each round rotates a → b → c
    assert order == ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["b"] * 2 + ["c"] * 2 + ["a"] * 2 + ["c"] * 2 + ["a"] * 2 + ["b"] * 2


def test_on_sample_runs_after_timed_calls_only():
    clock = FakeClock([2.0])
    seen: list[int] = []
    samples = time_calls(clock.work, warmup=4, iterations=3, clock=clock, on_sample=lambda: seen.append(clock.calls))
    assert samples == [2.0, 2.0, 2.0]
    assert seen == [5, 6, 7]  # after the 5th, 6th and 7th call: the 4 warm-up calls are not sampled


def test_bench_reports_device_phases_of_gpu_runners():
    """A runner exposing CUDA-event times (as TrtRunner does) gets an H2D/compute/D2H breakdown."""
    from segdeploy.bench.benchmark import device_breakdown

    timings = [{"h2d": 0.5, "compute": 4.0 + i, "d2h": 0.25} for i in range(5)]
    breakdown = device_breakdown(timings, batch=1)
    assert breakdown["compute"]["median"] == 6.0 and breakdown["compute"]["max"] == 8.0
    assert breakdown["h2d"]["mean"] == 0.5 and breakdown["d2h"]["iterations"] == 5


def test_latency_keeps_device_times_of_timed_calls_only():
    from types import SimpleNamespace

    from segdeploy.bench.benchmark import BenchOptions, _latency
    from segdeploy.graph_spec import GraphSpec
    from segdeploy.preprocess import Preprocess

    class GpuLikeRunner:
        def __init__(self):
            self.calls = 0
            self.last_device_ms = None

        def infer(self, feed):
            self.calls += 1
            self.last_device_ms = {"h2d": 0.1, "compute": float(self.calls), "d2h": 0.2}
            return {"logits": np.zeros((1, 2, 8, 8), dtype=np.float32)}

    runner = GpuLikeRunner()
    dataset = [SimpleNamespace(image=np.zeros((10, 12, 3), dtype=np.uint8))]
    options = BenchOptions(iterations=4, warmup=3, rounds=1)
    spec = GraphSpec("input", (1, 3, 8, 8), "NCHW", "float32", "logits", "logits", "float32")
    report = _latency({"gpu": runner}, {"gpu": spec}, dataset, Preprocess(), options)["gpu"]
    # inference: 3 warm-up calls (1..3) then 4 timed (4..7); only the timed ones are kept
    assert report["device_ms"]["compute"]["min"] == 4.0 and report["device_ms"]["compute"]["max"] == 7.0
    assert report["device_ms"]["compute"]["iterations"] == 4 and report["inference"]["iterations"] == 4

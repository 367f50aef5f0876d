"""Benchmarks: latency harness, accuracy and drift, gates, reports."""

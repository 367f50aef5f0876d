"""Per-layer precision by measurement for OpenVINO's hinted artifacts (bf16, fp16 on a CPU).

A precision hint makes every layer compute in bf16, but on a given CPU some kernels are slower
in bf16 than in FP32 (measured: on this AMX CPU the dilated 3×3 ASPP convolutions of
deeplabv3_resnet50 take 2.3× longer in bf16; README "Measured"). At build time the model is
profiled both ways on the build device (OpenVINO's per-layer counters, `PERF_COUNT`), the compute
layers that are slower in the hint by a clear margin are marked to keep their FP32 precision,
and the marked model is kept only if it is faster end to end (interleaved timing). The marks
live in the IR itself (OpenVINO's `DisablePrecisionConversion` runtime attribute on the layer),
so every later load — runner, compiled blob, another process — computes those layers in FP32.

Keeping a layer in FP32 only makes it more exact; the artifact's drift is benched as for any
other artifact, and the record lists the layers and the timings that chose them. The choice is
the build machine's: on another CPU the marked layers still compute correctly, perhaps not fastest.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

PROFILE_RUNS = 3  # profiled inferences per precision, after one warm-up
CONFIRM_ROUNDS = 4  # interleaved end-to-end rounds (2 inferences each) comparing marked and unmarked
SLOWER = 1.2  # a layer is slower in the hint when its time exceeds FP32's by this factor …
SHARE = 0.01  # … and by at least this share of the whole hinted inference (tiny layers are noise)
KEEP_ATTRIBUTE = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:dynamic"}


@dataclass(frozen=True)
class LayerChoice:
    """What the measurement found: the layers kept in FP32 (empty: none), the layers that were
    slower in the hint, and the timings (ms, medians) that decided."""

    layers: tuple[str, ...]
    slower: tuple[str, ...]
    hinted_ms: float  # the whole inference, every layer in the hint (profile sum)
    fp32_ms: float  # the whole inference in FP32 (profile sum)
    layer_ms: dict  # layer → {"hint": ms, "fp32": ms} for the slower layers
    confirmed: dict  # {"unmarked_ms", "marked_ms"} end to end; {} when no layer was slower

    def summary(self) -> str:
        if self.layers:
            return (f"{len(self.layers)} layer(s) slower in the hint kept in FP32: {self.confirmed['unmarked_ms']:.1f} → "
                    f"{self.confirmed['marked_ms']:.1f} ms end to end")
        if self.slower and self.confirmed:
            return (f"{len(self.slower)} layer(s) slower in the hint, but keeping them in FP32 was not faster end to end "
                    f"({self.confirmed['unmarked_ms']:.1f} vs {self.confirmed['marked_ms']:.1f} ms): every layer in the hint")
        if self.slower:
            return (f"{len(self.slower)} layer(s) slower in the hint, none of which could be kept in FP32 alone (every "
                    "compute layer, or no IR layer of that name): every layer in the hint; if the hint is slower "
                    "overall, build fp32 instead")
        return "no layer slower in the hint than in FP32: every layer in the hint"

    def record(self) -> dict:
        return {"layers": list(self.layers), "slower_in_hint": list(self.slower),
                "hinted_profile_ms": round(self.hinted_ms, 2), "fp32_profile_ms": round(self.fp32_ms, 2),
                "layer_ms": {k: {p: round(v, 3) for p, v in t.items()} for k, t in self.layer_ms.items()},
                **{k: round(v, 2) for k, v in self.confirmed.items()}}


def slower_layers(hinted: dict[str, float], fp32: dict[str, float], kinds: dict[str, str], compute: set[str],
                  slower: float = SLOWER, share: float = SHARE) -> list[str]:
    """Compute layers (by execution-graph name) whose hinted time exceeds FP32's by `slower`× and by
    `share` of the hinted total; slowest difference first."""
    total = sum(hinted.values())
    found = [(hinted[n] - fp32[n], n) for n in hinted
             if kinds.get(n) in compute and n in fp32 and hinted[n] > slower * fp32[n] and hinted[n] - fp32[n] > share * total]
    return [name for _, name in sorted(found, reverse=True)]


def profile(compiled, feed: dict, runs: int = PROFILE_RUNS) -> tuple[dict[str, float], dict[str, str]]:
    """Median real time (ms) of each execution-graph node over `runs` inferences, and each node's type."""
    request = compiled.create_infer_request()
    request.infer(feed)
    times: dict[str, list[float]] = {}
    kinds: dict[str, str] = {}
    for _ in range(runs):
        request.infer(feed)
        for info in request.get_profiling_info():
            times.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1e3)
            kinds[info.node_name] = info.node_type
    return {name: float(np.median(t)) for name, t in times.items()}, kinds


def end_to_end(requests: dict, feed: dict, rounds: int = CONFIRM_ROUNDS) -> dict[str, float]:
    """Median latency (ms) of each request, measured in interleaved rounds (order alternating)."""
    times: dict[str, list[float]] = {name: [] for name in requests}
    names = list(requests)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            requests[name].infer(feed)  # the first of a pair absorbs the switch between models
            start = time.perf_counter()
            requests[name].infer(feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def mark_fp32(xml: Path, layers: list[str]) -> list[str]:
    """Mark `layers` (IR layer names) in the IR `xml` to keep their FP32 precision under any hint;
    the file is rewritten in place (callers write into scratch space). Returns the layers found."""
    tree = ET.parse(xml)
    wanted = set(layers)
    found = []
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") in wanted:
            info = layer.find("rt_info")
            if info is None:
                info = ET.Element("rt_info")
                layer.insert(0 if layer.find("data") is None else 1, info)
            ET.SubElement(info, "attribute", KEEP_ATTRIBUTE)
            found.append(layer.get("name"))
    tree.write(xml, encoding="utf-8", xml_declaration=True)
    return found


def choose(xml: Path, compile_as: Callable, feed: dict, compute: set[str], step: Callable[[str], None],
           unmarked=None) -> LayerChoice:
    """Profile the IR `xml` with the hint and in FP32 (`compile_as(path, hinted: bool, profiling: bool)`
    → compiled model), mark the compute layers slower in the hint (`mark_fp32`), and keep the marks
    only when the marked model is faster end to end (else the IR is restored byte for byte).
    `unmarked`: the model already compiled with the hint, if the caller has it (not compiled again)."""
    step("timing each layer in the hint and in FP32 (OpenVINO's per-layer counters)")
    hinted, kinds = profile(compile_as(xml, True, True), feed)
    fp32, _ = profile(compile_as(xml, False, True), feed)
    names = slower_layers(hinted, fp32, kinds, compute)
    timings = {n: {"hint": hinted[n], "fp32": fp32[n]} for n in names}
    totals = (sum(hinted.values()), sum(fp32.values()))
    if not names:
        return LayerChoice((), (), *totals, {}, {})
    if {n for n, kind in kinds.items() if kind in compute} <= set(names):  # nothing would be left in the hint
        return LayerChoice((), tuple(names), *totals, timings, {})
    original = xml.read_bytes()
    unmarked = unmarked if unmarked is not None else compile_as(xml, True, False)
    kept = mark_fp32(xml, names)
    if not kept:  # execution-graph names that are no IR layer: nothing to mark
        xml.write_bytes(original)
        return LayerChoice((), tuple(names), *totals, timings, {})
    marked = compile_as(xml, True, False)
    step(f"confirming end to end: {len(kept)} layer(s) slower in the hint kept in FP32")
    timed = end_to_end({"unmarked": unmarked.create_infer_request(), "marked": marked.create_infer_request()}, feed)
    confirmed = {"unmarked_ms": timed["unmarked"], "marked_ms": timed["marked"]}
    if timed["marked"] >= timed["unmarked"]:
        xml.write_bytes(original)
        return LayerChoice((), tuple(names), *totals, timings, confirmed)
    return LayerChoice(tuple(kept), tuple(names), *totals, timings, confirmed)

"""Calibration ranges: onnxruntime's calibrators, run here so one of their failures can be avoided.

`calibrate` is what `quantize_static` does when it has no range cache — `create_calibrator`,
`collect_data` in strides of batches (a calibrator keeps every batch's activations until
`collect_data` returns, so strides bound memory), `compute_data`, `save_tensors_data` — and
`quantize_static` then reads the cache it wrote. One difference: the percentile calibrator's
histogram collector. onnxruntime starts each tensor's histogram with `numpy.histogram(|x|, 2048
bins)` over the first batch's own range; a tensor whose values all lie within a few float32
steps of each other — LayerNorm's variance + eps ≈ 1 ± 2·10⁻⁵ in a SegFormer (MiT) encoder —
cannot be cut into 2048 distinct float32 bins there, and the whole calibration stops with
numpy's "Too many bins for data range". Here such a tensor's first histogram gets bins two
float32 steps wide ending at its largest value (`_Collector`); every other tensor is collected
exactly as onnxruntime collects it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from segdeploy.atomic import atomic_path

MAX_BATCHES_IN_MEMORY = 4  # batches collected per stride (a divisor of the batch count)
# segdeploy's method names → onnxruntime's calibrator and its options. mean-minmax: the mean over
# batches of each batch's min and max (NNCF's MEAN_MINMAX for activations); onnxruntime averages
# within one `collect_data` call, so it is collected in one (a MinMax calibrator keeps two scalars
# per tensor and batch: no memory to bound).
CALIBRATORS = {"minmax": ("MinMax", {}), "mean-minmax": ("MinMax", {"moving_average": True}),
               "entropy": ("Entropy", {}), "percentile": ("Percentile", {})}


def calibrate(prepared: Path, reader, method: str, percentile: float, op_types: list[str], cache_path: Path) -> None:
    """Compute `method`'s ranges (a `CALIBRATORS` name) of `prepared` on `reader`'s batches into
    `cache_path` (onnxruntime's cache format)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data

    kind, options = CALIBRATORS[method]
    options = {**options, "percentile": percentile} if method == "percentile" else options
    with tempfile.TemporaryDirectory(prefix="segdeploy-calib-") as scratch:
        calibrator = create_calibrator(Path(prepared), op_types, augmented_model_path=str(Path(scratch) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod[kind], extra_options=options)
        if method == "percentile":
            calibrator.collector = _collector(calibrator)
        batches = len(reader)
        at_once = batches if method == "mean-minmax" else min(MAX_BATCHES_IN_MEMORY, batches)
        stride = max(d for d in range(1, at_once + 1) if batches % d == 0)
        for start in range(0, batches, stride):
            reader.set_range(start, start + stride)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    with atomic_path(cache_path) as tmp:
        save_tensors_data(ranges, tmp)


def _collector(calibrator):
    """onnxruntime's histogram collector for `calibrator`, safe for near-constant tensors (module docstring)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    class _Collector(HistogramCollector):
        def collect_absolute_value(self, name_to_arr):
            for name, data in name_to_arr.items():
                if name not in self.histogram_dict:
                    self._start_narrow(name, data)
            return super().collect_absolute_value(name_to_arr)

        def _start_narrow(self, name: str, data) -> None:
            """For a first batch onnxruntime cannot bin: an empty histogram whose bins are two float32
            steps wide, ending at max |x| (so the percentile lands within a step or two of where
            onnxruntime's own would); the batch itself is then added by onnxruntime's merge step."""
            values = np.asarray(data).ravel()
            magnitudes = np.absolute(values)
            try:
                np.histogram(magnitudes, bins=self.num_bins)
                return  # onnxruntime's own first histogram works
            except ValueError:
                pass
            high = np.float32(np.nanmax(magnitudes))
            low = max(0.0, min(float(np.nanmin(magnitudes)), float(high) - 2 * self.num_bins * float(np.spacing(high))))
            edges = np.linspace(low, float(high), self.num_bins + 1).astype(values.dtype)
            self.histogram_dict[name] = (np.zeros(self.num_bins, np.int64), edges, np.nanmin(values), np.nanmax(values))

    return _Collector(method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
                      num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
                      scenario=calibrator.scenario)

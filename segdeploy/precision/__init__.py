"""Precision graphs: FP16 conversion, calibration, explicit (Q/DQ) INT8 quantization.

Precision lives in the ONNX graph (docs/design.md, "Decisions"): every backend builds from these graphs,
and onnxruntime can evaluate each of them on a CPU.
"""

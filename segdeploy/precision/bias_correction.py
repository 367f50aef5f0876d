"""Bias correction: fold the mean output shift that INT8 rounding causes into the float bias.

Rounding a layer's weights to INT8 (and, in the graph, its input activations) moves the mean of
every output channel a little; the next layers see a biased input, and over dozens of layers the
shifts add up (Nagel et al., "Data-Free Quantization", 2019; NNCF's bias correction). The shift of
output channel o of y = W·x + b is, over the calibration images,

    weights mode:      E[(W_q − W)·x]_o                  — weight rounding alone, float inputs
    activations mode:  E[W_q·DQ(Q(x)) − W·x]_o           — weight *and* input rounding/clipping

where W_q is the DequantizeLinear(QuantizeLinear(W)) of the written Q/DQ graph and Q/DQ of x uses
that graph's scale and zero point for the layer's input. Both are linear in the mean of each
input patch (channel × kernel offset, zero padding included), so one pass of the float graph over
the calibration images gives every layer's shift exactly; subtracting it from the float bias
before the graph is quantized again corrects both targets: TensorRT keeps biases in float, and
onnxruntime's INT32 biases are quantized from the corrected value.

`correct_biases` is the whole step: read W_q and the input scales from the Q/DQ graph written,
measure, fold, quantize again from the corrected float graph (same cached ranges). W_q is
read from the graph rather than re-derived, so it is onnxruntime's rounding by construction; the
tests check it against the final graph's DequantizeLinear outputs run in onnxruntime.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from segdeploy.manifest.records import BiasCorrectionRecord
from segdeploy.precision.qdq_edit import dequantize_constant

MODES = ("weights", "activations")
DEFAULT_MODE = "weights"  # chosen by measurement (README, "INT8 accuracy")
LAYER_OPS = ("Conv", "Gemm", "MatMul")
CORRECTED = "corrected"


@dataclass
class Layer:
    """One quantized layer: its float and rounded weights and how its input is rounded."""

    node: str
    op: str
    input: str  # the float activation tensor the layer reads (name in the float graph)
    weight: np.ndarray
    weight_q: np.ndarray  # DQ(Q(W)) as written in the Q/DQ graph
    input_q: tuple[np.ndarray, np.ndarray] | None  # (scale, zero point) of the input's Q/DQ, None when float
    conv: dict | None = None  # Conv attributes (strides, dilations, pads, group)
    trans_b: bool = False  # Gemm: the weight is N × K


def correct_biases(prepared: Path, written: Path, write: Callable[[Path, Path], None], batches: Iterable[dict],
                   mode: str = DEFAULT_MODE, skip: Iterable[str] = (), threshold: float | None = None) -> BiasCorrectionRecord:
    """Rewrite the Q/DQ graph `written` (made from `prepared` by `write`) with corrected biases.

    `write(source, dest)` writes the Q/DQ graph of `source` (the caller's target and cached
    ranges); `batches`: the calibration batches ({input name: array}); `skip`: nodes left
    uncorrected (layers that will be kept in float); `threshold`: leave a layer uncorrected when
    its shift is that many times its float bias or more in some channel, or its bias is 0 in
    some channel (NNCF's fast bias correction rule, threshold 2); None: correct every layer.
    Returns the manifest's record.
    """
    if mode not in MODES:
        raise ValueError(f"bias correction mode must be one of {MODES}, got {mode!r}")
    float_model = onnx.load(str(prepared))
    skipped = set(skip)
    layers = [layer for layer in quantized_layers(onnx.load(str(written)), float_model) if layer.node not in skipped]
    if not layers:
        return BiasCorrectionRecord(enabled=True, mode=mode, images=0, layers_corrected=0, threshold=threshold)
    means, images = input_means(prepared, layers, batches, mode)
    shifts = {layer.node: layer_shift(layer, *means[layer.node], mode) for layer in layers}
    corrected, folded = fold_shifts(float_model, shifts, threshold)
    if CORRECTED in folded.values():  # every layer left alone (a threshold): `written` already is that graph
        with tempfile.TemporaryDirectory(prefix="segdeploy-bias-") as scratch:
            source = Path(scratch) / "corrected.onnx"
            onnx.save(corrected, str(source))
            write(source, written)
    return _record(mode, images, shifts, folded, threshold)


# -- reading the Q/DQ graph ------------------------------------------------------------------

def quantized_layers(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> list[Layer]:
    """Conv/Gemm/MatMul nodes of `qdq` whose weight is a dequantized constant, in graph order."""
    producers = {o: n for n in qdq.graph.node for o in n.output}
    inits = {i.name: i for i in qdq.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    layers = []
    for node in qdq.graph.node:
        if node.op_type not in LAYER_OPS or node.name not in float_nodes or len(node.input) < 2:
            continue
        original = float_nodes[node.name]
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or original.input[1] not in float_inits:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = numpy_helper.to_array(float_inits[original.input[1]]).astype(np.float32)
        if node.op_type != "Conv" and (weight.ndim != 2 or not _plain_gemm(attrs)):
            continue  # batched MatMul weights, transposed-A or scaled Gemm: left alone
        layers.append(Layer(
            node=node.name, op=node.op_type, input=original.input[0], weight=weight,
            weight_q=dequantize_constant(dq, inits),
            input_q=_input_quantization(producers.get(node.input[0]), inits),
            conv=_conv_attributes(attrs) if node.op_type == "Conv" else None,
            trans_b=bool(attrs.get("transB", 0)),
        ))
    return layers


def _input_quantization(dq: onnx.NodeProto | None, inits: dict):
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
        return None
    scale = numpy_helper.to_array(inits[dq.input[1]])
    if scale.size != 1:  # a per-channel activation is not something onnxruntime writes; leave it alone
        return None
    zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else np.zeros((), np.uint8)
    return scale.astype(np.float32).reshape(()), zero.reshape(())


def _conv_attributes(attrs: dict) -> dict:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    return {"strides": attrs.get("strides"), "dilations": attrs.get("dilations"), "pads": attrs.get("pads"),
            "group": int(attrs.get("group", 1)), "auto_pad": auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad}


def _plain_gemm(attrs: dict) -> bool:
    """Y = A·op(B) + C: only Gemm without transA and with alpha = beta = 1 is corrected (MatMul has none)."""
    return attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0


# -- measuring ------------------------------------------------------------------------------

def input_means(prepared: Path, layers: list[Layer], batches: Iterable[dict], mode: str = DEFAULT_MODE) -> tuple[dict, int]:
    """Per layer, the mean input patch of x and (activations mode) of DQ(Q(x)) over `batches`.

    One onnxruntime run of the float graph per batch, every layer input exposed as an output."""
    session, names = layer_inputs_session(prepared, layers)
    sums = {layer.node: [0.0, 0.0] for layer in layers}
    counts = {layer.node: 0 for layer in layers}
    images = 0
    for batch in batches:
        values = dict(zip(names, session.run(names, batch)))
        images += next(iter(batch.values())).shape[0]
        for layer in layers:
            x = values[layer.input].astype(np.float32, copy=False)
            total, positions = _patch_sum(x, layer)
            rounded = x if mode == "weights" or layer.input_q is None else _fake_quantize(x, *layer.input_q)
            sums[layer.node][0] = sums[layer.node][0] + total
            sums[layer.node][1] = sums[layer.node][1] + (total if rounded is x else _patch_sum(rounded, layer)[0])
            counts[layer.node] += positions
    if images == 0:
        raise ValueError("bias correction needs at least one calibration batch")
    return {k: (s[0] / counts[k], s[1] / counts[k]) for k, s in sums.items()}, images


def layer_inputs_session(prepared: Path, layers: list[Layer]):
    """An onnxruntime session of the float graph with every layer's input tensor also an output,
    and those tensors' names (run them with `session.run(names, batch)`)."""
    import onnxruntime as ort

    model = onnx.load(str(prepared))
    names = list(dict.fromkeys(layer.input for layer in layers))
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), names


def _fake_quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(x)) as onnxruntime computes it: float32 x / scale, round half
    to even, add the zero point, saturate to the type's range."""
    info = np.iinfo(zero.dtype)
    zero = np.float32(zero)
    q = np.rint(x / scale)
    q += zero
    np.clip(q, info.min, info.max, out=q)
    q -= zero
    q *= scale
    return q


def _patch_sum(x: np.ndarray, layer: Layer) -> tuple[np.ndarray, int]:
    """Sum over output positions of each input patch (Conv: C × kernel; Gemm/MatMul: K) and the count.

    Zero padding contributes nothing, so windows are clipped to the tensor instead of padding it;
    the sum is separable over spatial axes (one axis at a time, `_window_sums`)."""
    if layer.op != "Conv":
        flat = x.reshape(-1, x.shape[-1])
        return flat.sum(axis=0, dtype=np.float64), flat.shape[0]
    kernel = layer.weight.shape[2:]
    rank = len(kernel)
    strides = layer.conv["strides"] or [1] * rank
    dilations = layer.conv["dilations"] or [1] * rank
    pads = conv_pads(layer.conv, x.shape[2:], kernel, strides, dilations)
    axes = []
    for d in range(rank):
        size = x.shape[2 + d]
        out = (size + pads[d] + pads[d + rank] - dilations[d] * (kernel[d] - 1) - 1) // strides[d] + 1
        axes.append((size, pads[d], kernel[d], dilations[d], strides[d], out))
    sums = _window_sums(x[0] if len(x) == 1 else x.sum(axis=0, dtype=np.float64), axes)
    return sums, x.shape[0] * int(np.prod([a[-1] for a in axes]))


def _window_sums(x: np.ndarray, axes: list[tuple]) -> np.ndarray:
    """x: C × spatial; returns C × kernel: per kernel offset, the sum over the input positions it reads.

    Along each axis the positions one offset reads form a run (stride apart, clipped to the tensor),
    so each sum is a difference of two prefix sums; the last (contiguous) axis goes first, after
    which the tensor is small."""
    for axis in reversed(range(len(axes))):
        x = _axis_window_sums(x, axis + 1, *axes[axis])
    return x


def _axis_window_sums(x: np.ndarray, axis: int, size: int, pad: int, kernel: int, dilation: int, stride: int,
                      out: int) -> np.ndarray:
    def along(index):
        return (slice(None),) * axis + (index,)

    total = x.sum(axis=axis, dtype=np.float64) if stride == 1 else None
    prefix: dict[int, np.ndarray] = {}
    parts = []
    for offset in range(kernel):
        first = offset * dilation - pad  # input index read by output position 0 (negative: padding)
        p0 = max(0, (stride - 1 - first) // stride)  # first position reading inside the tensor
        p1 = min(out - 1, (size - 1 - first) // stride)
        start, stop = first + p0 * stride, first + p1 * stride + 1
        if p1 < p0:
            parts.append(np.zeros_like(x[along(0)], dtype=np.float64))
        elif total is not None:  # stride 1: everything but a few rows at either end
            parts.append(total - x[along(slice(0, start))].sum(axis=axis, dtype=np.float64)
                         - x[along(slice(stop, None))].sum(axis=axis, dtype=np.float64))
        else:
            residue = start % stride
            if residue not in prefix:
                sums = np.cumsum(x[along(slice(residue, None, stride))], axis=axis, dtype=np.float64)
                prefix[residue] = np.concatenate([np.zeros_like(sums[along(slice(0, 1))]), sums], axis=axis)
            a, b = (start - residue) // stride, (stop - 1 - residue) // stride
            parts.append(prefix[residue][along(b + 1)] - prefix[residue][along(a)])
    return np.stack(parts, axis=axis)


def conv_pads(conv: dict, spatial, kernel, strides, dilations) -> list[int]:
    rank = len(kernel)
    if conv["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * rank)
        for d in range(rank):
            total = max(0, (-(-spatial[d] // strides[d]) - 1) * strides[d] + dilations[d] * (kernel[d] - 1) + 1 - spatial[d])
            small, large = total // 2, total - total // 2
            pads[d], pads[d + rank] = (small, large) if conv["auto_pad"] == "SAME_UPPER" else (large, small)
        return pads
    if conv["auto_pad"] == "VALID":
        return [0] * (2 * rank)
    return list(conv["pads"] or [0] * (2 * rank))


def layer_shift(layer: Layer, mean: np.ndarray, mean_q: np.ndarray, mode: str) -> np.ndarray:
    """The mean output shift per output channel (what the bias must lose)."""
    if mode == "weights":
        return _apply(layer, layer.weight_q.astype(np.float64) - layer.weight, mean)
    return _apply(layer, layer.weight_q.astype(np.float64), mean_q) - _apply(layer, layer.weight.astype(np.float64), mean)


def _apply(layer: Layer, weight: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Σ weight · mean patch per output channel (grouped for Conv)."""
    if layer.op == "Conv":
        group = layer.conv["group"]
        out_channels, in_per_group = weight.shape[:2]
        w = weight.reshape(group, out_channels // group, in_per_group, -1)
        m = mean.reshape(group, in_per_group, -1)
        return np.einsum("goik,gik->go", w, m).reshape(out_channels)
    return weight @ mean if layer.trans_b else mean @ weight  # Gemm transB: N × K; else K × N


# -- folding --------------------------------------------------------------------------------

def fold_shifts(model: onnx.ModelProto, shifts: dict[str, np.ndarray],
                threshold: float | None = None) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of the float graph with b − shift as each layer's bias (within `threshold`, see
    `correct_biases`); returns it and what was done per layer."""
    corrected = onnx.ModelProto()
    corrected.CopyFrom(model)
    inits = {i.name: i for i in corrected.graph.initializer}
    consumers: dict[str, list] = {}
    for node in corrected.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = {}
    for node in corrected.graph.node:
        if node.name not in shifts:
            continue
        shift = shifts[node.name]
        if node.op_type in ("Conv", "Gemm"):
            folded[node.name] = _fold_into_input(corrected, node, 2, shift, inits, threshold)
        else:
            add = _bias_add(node, consumers, inits)
            folded[node.name] = (_fold_into_input(corrected, add, _constant_index(add, inits), shift, inits, threshold)
                                 if add else "no bias to fold into")
    return corrected, folded


def _fold_into_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int, shift: np.ndarray, inits: dict,
                     threshold: float | None = None) -> str:
    """A new initializer `<node>.bias_corrected` = old bias (or 0) − shift, read only by `node`."""
    if index < len(node.input) and node.input[index]:
        old = numpy_helper.to_array(inits[node.input[index]])
        if old.size != shift.size:
            return f"bias of shape {list(old.shape)} does not match {shift.size} output channels"
        if threshold is not None and not _within(shift, old.reshape(-1), threshold):
            return f"shift ≥ {threshold:g}× the bias in some channel (or a bias of 0)"
    elif threshold is not None:
        return "no bias (a threshold is set)"
    else:
        old = np.zeros(shift.size, np.float32)
        while len(node.input) < index:
            node.input.append("")
        node.input.append("")
    name = f"{node.name}.bias_corrected"
    model.graph.initializer.append(numpy_helper.from_array((old.reshape(-1) - shift).astype(np.float32).reshape(old.shape), name))
    node.input[index] = name
    return CORRECTED


def _within(shift: np.ndarray, bias: np.ndarray, threshold: float) -> bool:
    """NNCF's magnitude rule: max |shift / bias| < threshold, and no channel's bias exactly 0."""
    if np.any(bias == 0):
        return False
    return float(np.max(np.abs(shift / bias.astype(np.float64)))) < threshold


def _bias_add(matmul: onnx.NodeProto, consumers: dict, inits: dict) -> onnx.NodeProto | None:
    readers = consumers.get(matmul.output[0], [])
    if len(readers) == 1 and readers[0].op_type == "Add" and _constant_index(readers[0], inits) is not None:
        return readers[0]
    return None


def _constant_index(node: onnx.NodeProto, inits: dict) -> int | None:
    return next((i for i, name in enumerate(node.input) if name in inits), None)


def _record(mode: str, images: int, shifts: dict, folded: dict, threshold: float | None) -> BiasCorrectionRecord:
    largest = max(shifts, key=lambda node: float(np.abs(shifts[node]).max()))
    return BiasCorrectionRecord(
        enabled=True, mode=mode, images=images,
        layers_corrected=sum(1 for how in folded.values() if how == CORRECTED),
        layers_skipped={node: how for node, how in folded.items() if how != CORRECTED},
        largest_shift={"node": largest, "value": round(float(np.abs(shifts[largest]).max()), 6)},
        threshold=threshold,
    )

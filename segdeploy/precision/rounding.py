"""Error-compensating weight rounding: each layer's INT8 weights chosen for its output, not one by one.

Rounding every weight to its nearest INT8 step minimises each weight's own error, not the
layer's: when a layer's inputs are correlated (neighbouring pixels, the three colour channels
of an image), the errors of a kernel add up instead of cancelling. The first convolution of the
CamVid LR-ASPP shows it: with only that layer's weights restored to float, its INT8 graph lost
0.10 mIoU instead of 0.33 on frames no setting was chosen on (README, *INT8 accuracy*).

Here each Conv's weights are rounded one input column at a time, and the rounding error of a
column is pushed onto the columns not rounded yet, weighted by the inverse of the layer's input
second moments H = E[x xᵀ] over calibration patches — the GPTQ / Optimal Brain Quantization
update (Frantar et al., "GPTQ", 2022; Frantar & Alistarh, "Optimal Brain Compression", 2022),
which minimises E‖(W − W_q)·x‖² greedily. The scales stay those onnxruntime wrote (per output
channel, symmetric): only the integers change, so the graph, its Q/DQ placement and its
runtime cost are the same, and TensorRT and onnxruntime both read the result.

`round_weights` measures H on the float graph (one onnxruntime pass over the calibration
images, every Conv input exposed as an output, at most `POSITIONS` output positions an image,
chosen with a fixed seed) and returns the new integers per Conv; `apply` writes them into a Q/DQ
graph made from the same float weights (the scales must match; a graph re-quantized after bias
correction gets them again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from segdeploy.precision.bias_correction import Layer, conv_pads, layer_inputs_session, quantized_layers

WEIGHT_ROUNDINGS = ("gptq", "nearest")  # build --weight-rounding
IMAGES = 32  # calibration images H is measured on (spread evenly; 100 gave the same graphs' agreement)
POSITIONS = 2048  # at most this many output positions sampled per image and layer for H
# Cost bounds: H costs samples × K² to measure and K³ to invert (K = a group's inputs × kernel).
MAX_COLUMNS = 8192  # wider layers keep nearest rounding (recorded): e.g. a 3×3 ASPP conv on 2048 channels
SAMPLE_FLOPS = 2e10  # samples per layer ≈ this / K², but at least 4·K, at most what IMAGES × POSITIONS give
DAMPING = 0.01  # added to H's diagonal, as a fraction of its mean (GPTQ's default)
SEED = 0
BLOCK = 64  # columns rounded before the columns after them are updated at once


@dataclass(frozen=True)
class Rounded:
    """New INT8 weights of one Conv, with the scale they were rounded for."""

    node: str
    values: np.ndarray  # same shape and dtype as the graph's quantized weight
    scale: np.ndarray  # per output channel
    changed: int  # how many integers differ from round-to-nearest


def round_weights(prepared: Path, written: Path, batches: Iterable[dict], skip: Iterable[str] = (),
                  kept_nearest: list | None = None, limits: tuple[int, int] | None = None) -> dict[str, Rounded]:
    """The error-compensated INT8 weights of every per-channel symmetric Conv of the Q/DQ graph
    `written` (made from the float graph `prepared`), measured on `batches` ({input: array}).
    Convs wider than MAX_COLUMNS keep nearest rounding; their names are appended to `kept_nearest`.
    `limits`: the integer range the graph's weights use (`quantize.weight_limits`; 7-bit weights
    must stay 7-bit); None: [−127, 127], or −128 where onnxruntime used it."""
    qdq, float_model = onnx.load(str(written)), onnx.load(str(prepared))
    weights = symmetric_weights(qdq)
    skipped = set(skip)
    candidates = [layer for layer in quantized_layers(qdq, float_model)
                  if layer.op == "Conv" and layer.node not in skipped and layer.node in weights]
    layers = [layer for layer in candidates if columns(layer) <= MAX_COLUMNS]
    if kept_nearest is not None:
        kept_nearest.extend(layer.node for layer in candidates if columns(layer) > MAX_COLUMNS)
    if not layers:
        return {}
    batches = list(batches)
    hessians = input_moments(prepared, layers, batches, images=sum(next(iter(b.values())).shape[0] for b in batches))
    rounded = {}
    for layer in layers:
        quantized, scale = (numpy_helper.to_array(init) for init in weights[layer.node])
        scale = scale.reshape(-1).astype(np.float32)
        values = gptq_round(layer, hessians[layer.node], scale, quantized.dtype, limits or _limits(quantized))
        changed = int(np.count_nonzero(values != quantized))
        rounded[layer.node] = Rounded(layer.node, values.astype(quantized.dtype).reshape(quantized.shape), scale, changed)
    return rounded


def apply(path: Path, rounded: dict[str, Rounded]) -> int:
    """Write `rounded` into the Q/DQ graph at `path` (in place). Returns the layers written; a layer
    whose weight scale differs from the one its integers were rounded for is left alone."""
    if not rounded:
        return 0
    model = onnx.load(str(path))
    weights = symmetric_weights(model)
    written = 0
    for name, item in rounded.items():
        if name not in weights:
            continue
        quantized, scale = weights[name]
        if quantized.dims != list(item.values.shape) or not np.array_equal(numpy_helper.to_array(scale).reshape(-1), item.scale):
            continue
        quantized.CopyFrom(numpy_helper.from_array(item.values, quantized.name))
        written += 1
    onnx.save(model, str(path))
    return written


# -- the rounding ---------------------------------------------------------------------------

def gptq_round(layer: Layer, hessian: np.ndarray, scale: np.ndarray, dtype, limits: tuple[int, int]) -> np.ndarray:
    """Integers for `layer`'s float weight (O × Cg × k…) under per-output-channel `scale`, rounded
    column by column with the GPTQ update; `hessian`: G × K × K input second moments per group."""
    group = layer.conv["group"]
    out_channels = layer.weight.shape[0]
    per_group = out_channels // group
    weight = layer.weight.astype(np.float64).reshape(group, per_group, -1)  # G × Og × K
    steps = scale.astype(np.float64).reshape(group, per_group, 1)
    upper = _inverse_cholesky(hessian)  # G × K × K, upper triangular factor of H⁻¹
    low, high = limits
    step = steps[:, :, 0]
    result = np.empty_like(weight)
    columns_total = weight.shape[2]
    for start in range(0, columns_total, BLOCK):  # GPTQ's lazy batches: the same updates, the far ones as one matmul
        stop = min(start + BLOCK, columns_total)
        block = weight[:, :, start:stop].copy()
        errors = np.empty_like(block)
        for i in range(stop - start):
            column = start + i
            w = block[:, :, i]
            q = np.clip(np.rint(w / step), low, high)
            result[:, :, column] = q
            errors[:, :, i] = (w - q * step) / upper[:, column, column][:, None]
            block[:, :, i + 1:] -= errors[:, :, i, None] * upper[:, None, column, column + 1:stop]
        if stop < columns_total:
            weight[:, :, stop:] -= np.matmul(errors, upper[:, start:stop, stop:])
    return result.reshape(layer.weight.shape).astype(dtype)


def _inverse_cholesky(hessian: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of (H + damping)⁻¹ per group; inputs that never vary get H_ii = 1."""
    h = hessian.astype(np.float64).copy()
    diagonal = np.einsum("gkk->gk", h)
    dead = diagonal <= 0
    diagonal[dead] = 1.0
    damp = DAMPING * np.maximum(diagonal.mean(axis=1, keepdims=True), 1e-12)
    index = np.arange(h.shape[1])
    h[:, index, index] = diagonal + damp
    inverse = np.linalg.inv(h)
    inverse = (inverse + np.swapaxes(inverse, 1, 2)) / 2
    return np.swapaxes(np.linalg.cholesky(inverse), 1, 2)


# -- measuring H ----------------------------------------------------------------------------

def columns(layer: Layer) -> int:
    """K: the inputs one output channel of `layer` reads (its group's channels × kernel)."""
    return int(np.prod(layer.weight.shape[1:]))


def positions_per_image(layer: Layer, images: int) -> int:
    """Output positions to sample per image so that H gets about SAMPLE_FLOPS / K² samples (≥ 4·K)."""
    k = columns(layer)
    samples = max(4 * k, SAMPLE_FLOPS / (k * k))
    return int(min(POSITIONS, max(1, np.ceil(samples / max(images, 1)))))


def input_moments(prepared: Path, layers: list[Layer], batches: Iterable[dict], images: int = IMAGES) -> dict[str, np.ndarray]:
    """Per Conv, E[p pᵀ] of its input patches p (per group: G × K × K), on sampled output positions
    (`positions_per_image`: `images` is how many images `batches` hold)."""
    session, names = layer_inputs_session(prepared, layers)
    rng = np.random.default_rng(SEED)
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys((layer.node for layer in layers), 0)
    for batch in batches:
        values = dict(zip(names, session.run(names, batch)))
        for layer in layers:
            x = values[layer.input].astype(np.float32, copy=False)
            for image in x:
                patches = _sampled_patches(image, layer, rng, positions_per_image(layer, images))  # P × G × K
                grouped = patches.transpose(1, 2, 0)  # G × K × P
                moment = np.matmul(grouped, grouped.transpose(0, 2, 1)).astype(np.float64)
                sums[layer.node] = moment if layer.node not in sums else sums[layer.node] + moment
                counts[layer.node] += len(patches)
    if not sums:
        raise ValueError("weight rounding needs at least one calibration batch")
    return {node: total / max(counts[node], 1) for node, total in sums.items()}


def _sampled_patches(image: np.ndarray, layer: Layer, rng, positions: int = POSITIONS) -> np.ndarray:
    """Input patches (P × G × K, K = Cg·k…, in the weight's element order) at up to `positions`
    output positions of one image (C × spatial), zero padding included. 2-D convolutions only."""
    kernel = layer.weight.shape[2:]
    if len(kernel) != 2:
        raise ValueError("weight rounding handles 2-D convolutions only")
    strides = layer.conv["strides"] or [1, 1]
    dilations = layer.conv["dilations"] or [1, 1]
    pads = conv_pads(layer.conv, image.shape[1:], kernel, strides, dilations)
    padded = np.pad(image, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out = [(padded.shape[1 + d] - dilations[d] * (kernel[d] - 1) - 1) // strides[d] + 1 for d in range(2)]
    total = out[0] * out[1]
    chosen = rng.choice(total, positions, replace=False) if total > positions else np.arange(total)
    rows, cols = np.divmod(chosen, out[1])
    offsets = [(i * dilations[0], j * dilations[1]) for i in range(kernel[0]) for j in range(kernel[1])]
    patches = np.stack([padded[:, rows * strides[0] + di, cols * strides[1] + dj] for di, dj in offsets], axis=-1)  # C × P × kk
    group = layer.conv["group"]
    channels = patches.shape[0]
    patches = patches.reshape(group, channels // group, len(chosen), -1)  # G × Cg × P × kk
    return patches.transpose(2, 0, 1, 3).reshape(len(chosen), group, -1)


# -- reading the graph ----------------------------------------------------------------------

def symmetric_weights(model: onnx.ModelProto) -> dict:
    """{Conv name: (INT8 weight initializer, scale initializer)} for every Conv whose weight is a
    per-output-channel symmetric INT8 constant behind a DequantizeLinear (zero points 0, axis 0);
    any other Conv is left as onnxruntime rounded it. One pass over the graph."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = {}
    for node in model.graph.node:
        dq = producers.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        quantized, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next((onnx.helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
        zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else np.zeros(1, np.int8)
        channels = int(np.prod(scale.dims)) if scale.dims else 1
        if quantized.data_type != onnx.TensorProto.INT8 or not quantized.dims or channels != quantized.dims[0] or axis != 0 \
                or np.any(zero != 0):
            continue
        found[node.name] = (quantized, scale)
    return found


def _limits(values: np.ndarray) -> tuple[int, int]:
    """The integer range the weights may use: symmetric [−127, 127] unless onnxruntime used −128."""
    return (-128 if values.min() < -127 else -127), 127

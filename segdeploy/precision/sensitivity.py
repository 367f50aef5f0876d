"""Where INT8 quantization costs accuracy: per-node sensitivity and per-tensor error.

Two measures, both in onnxruntime on the CPU, both against the prepared FP32 graph (the
graph that was quantized, so tensor and node names match):

* `rank_nodes` — **output-referred, leave-one-out**: for each quantized node, how much
  closer the model's output gets to FP32 when only that node is kept in float
  (`qdq_edit.keep_float`) while the rest stays INT8. It measures exactly the operation the
  mixed-precision search then applies, including how the network amplifies or hides an
  error, which a local error cannot tell. One graph edit and one session per node.
* `tensor_errors` — **local and cumulative**: for each Q/DQ pair, the SQNR of its output
  against its own input (the error the pair adds) and against the same tensor in the FP32
  graph (all error up to that point); and for each quantized weight, against the float weight.
  This is `segdeploy inspect precision`'s table.

Everything is deterministic: fixed batches, sorted with the node/tensor name as tie-break.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from segdeploy.evaluation.outputs import is_class_map
from segdeploy.precision.qdq_edit import FloatSources, dequantize_constant, keep_float, quantized_nodes, topological_sort


def session(model: onnx.ModelProto, threads: int | None = None):
    """An onnxruntime CPU session for an in-memory graph."""
    import onnxruntime as ort

    from segdeploy.backends.onnxruntime import session_options

    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def first_outputs(model: onnx.ModelProto, batches: list[dict], threads: int | None = None) -> list[np.ndarray]:
    runner = session(model, threads)
    name = runner.get_outputs()[0].name
    return [runner.run([name], batch)[0] for batch in batches]


def output_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """How far `candidate` is from `reference`: MSE / variance of the reference for float
    outputs (logits), the fraction of differing pixels for integer outputs (class maps)."""
    if is_class_map(reference[0]):
        return float(np.mean([np.mean(r != c) for r, c in zip(reference, candidate)]))
    noise = sum(float(np.sum((r.astype(np.float64) - c) ** 2)) for r, c in zip(reference, candidate))
    spread = sum(float(np.sum((r.astype(np.float64) - r.mean()) ** 2)) for r in reference)
    return noise / spread if spread > 0 else noise


def rank_nodes(fp32: onnx.ModelProto, qdq: onnx.ModelProto, batches: list[dict], on_node=None,
               workers: int = 1) -> list[dict]:
    """Quantized nodes, most costly first: {"node", "op", "error_all_int8", "error_this_float", "gain"}.

    `workers` > 1 measures the nodes in that many processes, each running onnxruntime with
    `WORKER_THREADS` intra-op thread(s) (the sessions are independent, so processes scale
    where one session's threads do not); `on_node(done, total)` reports progress. Every session
    runs with `WORKER_THREADS` thread(s) either way, so any number of workers gives the same
    figures bit for bit and the same order."""
    reference = first_outputs(fp32, batches, WORKER_THREADS)
    base = output_error(reference, first_outputs(qdq, batches, WORKER_THREADS))
    ops = {n.name: n.op_type for n in qdq.graph.node}
    nodes = quantized_nodes(qdq)
    if workers > 1 and len(nodes) > 1:
        errors = _errors_in_processes(fp32, qdq, batches, reference, nodes, workers, on_node)
    else:
        errors = {}
        for index, name in enumerate(nodes):
            errors[name] = _leave_one_out(fp32, qdq, batches, reference, name)
            if on_node is not None:
                on_node(index + 1, len(nodes))
    ranked = [{"node": name, "op": ops.get(name, "output"), "error_all_int8": base, "error_this_float": errors[name],
               "gain": base - errors[name]} for name in nodes]
    return sorted(ranked, key=lambda r: (-r["gain"], r["node"]))


WORKER_THREADS = 1  # intra-op threads of each ranking session


def _leave_one_out(fp32: onnx.ModelProto, qdq: onnx.ModelProto, batches, reference, name: str) -> float:
    """The output error with only `name` kept in float."""
    return output_error(reference, first_outputs(keep_float(qdq, fp32, [name]), batches, WORKER_THREADS))


def _errors_in_processes(fp32, qdq, batches, reference, nodes: list[str], workers: int, on_node) -> dict[str, float]:
    """{node: error} measured by `workers` spawned processes (spawn: onnxruntime's thread pools do
    not survive a fork), each holding the two graphs and the batches once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    errors: dict[str, float] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(nodes)), mp_context=context, initializer=_start_worker,
                             initargs=(fp32.SerializeToString(), qdq.SerializeToString(), batches, reference)) as pool:
        futures = {pool.submit(_worker_error, name): name for name in nodes}
        for future in as_completed(futures):
            errors[futures[future]] = future.result()
            if on_node is not None:
                on_node(len(errors), len(nodes))
    return errors


_WORKER: dict = {}  # one worker process's graphs and batches (`_start_worker`)


def _start_worker(fp32: bytes, qdq: bytes, batches: list[dict], reference: list[np.ndarray]) -> None:
    _WORKER.update(fp32=onnx.load_from_string(fp32), qdq=onnx.load_from_string(qdq), batches=batches, reference=reference)


def _worker_error(name: str) -> float:
    w = _WORKER
    return _leave_one_out(w["fp32"], w["qdq"], w["batches"], w["reference"], name)


def tensor_errors(fp32: onnx.ModelProto, qdq: onnx.ModelProto, batches: list[dict]) -> list[dict]:
    """SQNR (dB) and relative error of every quantized activation and weight, worst first."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(qdq)
    pairs = _activation_pairs(exposed, FloatSources(exposed, fp32))
    topological_sort(exposed)
    qdq_values = _run_with_outputs(exposed, [t for p in pairs for t in (p["float"], p["dequantized"])], batches)
    fp32_names = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    fp32_values = _run_with_outputs(fp32, [p["tensor"] for p in pairs if p["tensor"] in fp32_names], batches)
    rows = []
    for pair in pairs:
        got = qdq_values[pair["dequantized"]]
        local = _energy(qdq_values[pair["float"]], got)
        total = _energy(fp32_values[pair["tensor"]], got) if pair["tensor"] in fp32_values else None
        rows.append(_row("activation", pair["tensor"], pair["consumers"], local, total))
    rows += _weight_rows(fp32, qdq)
    return sorted(rows, key=lambda r: (r["worst_channel_sqnr_db"], r["sqnr_db"], r["tensor"]))


def _activation_pairs(qdq: onnx.ModelProto, sources: FloatSources) -> list[dict]:
    consumers: dict[str, list[str]] = {}
    for node in qdq.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    by_input = {n.input[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    outputs = {o.name for o in qdq.graph.output}
    pairs = []
    for node in list(qdq.graph.node):
        if node.op_type != "QuantizeLinear" or node.output[0] not in by_input:
            continue
        dq = by_input[node.output[0]]
        readers = consumers.get(dq.output[0], []) + (["(graph output)"] if dq.output[0] in outputs else [])
        pairs.append({"tensor": node.input[0], "float": sources.activation(node), "dequantized": dq.output[0],
                      "consumers": readers})
    return pairs


def _weight_rows(fp32: onnx.ModelProto, qdq: onnx.ModelProto) -> list[dict]:
    """Weights: DequantizeLinear of an initializer vs the FP32 graph's weight at the same node input."""
    inits = {i.name: i for i in qdq.graph.initializer}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    fp32_inits = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    dequantizers = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    rows = []
    for node in qdq.graph.node:
        original = fp32_nodes.get(node.name)
        for index, name in enumerate(node.input):
            if name not in dequantizers or original is None or index >= len(original.input):
                continue
            reference = fp32_inits.get(original.input[index])
            if reference is None or reference.ndim < 2:  # biases (1-D) are 32-bit: no visible error
                continue
            value = dequantize_constant(dequantizers[name], inits).astype(np.float64)
            rows.append(_row("weight", original.input[index], [node.name], None, _energy([reference], [value], axis=0)))
    return rows


def _run_with_outputs(model: onnx.ModelProto, names: list[str], batches: list[dict]) -> dict[str, list[np.ndarray]]:
    """Run `model` exposing the tensors `names` as outputs (float tensors: type given, shape inferred)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in dict.fromkeys(names):
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    runner = session(exposed)
    wanted = list(dict.fromkeys(names))
    values: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for batch in batches:
        for name, value in zip(wanted, runner.run(wanted, batch)):
            values[name].append(value)
    return values


def _energy(reference: list[np.ndarray], candidate: list[np.ndarray], axis: int = 1) -> tuple:
    """(signal, noise) energies overall and per channel along `axis` (None for tensors without one)."""
    signal = noise = 0.0
    per_signal = per_noise = None
    for r, c in zip(reference, candidate):
        r = np.asarray(r, dtype=np.float64)
        error = np.square(r - c)
        signal, noise = signal + float(np.sum(np.square(r))), noise + float(np.sum(error))
        if r.ndim >= 2:
            others = tuple(i for i in range(r.ndim) if i != axis)
            s_c, n_c = np.sum(np.square(r), axis=others), np.sum(error, axis=others)
            per_signal = s_c if per_signal is None else per_signal + s_c
            per_noise = n_c if per_noise is None else per_noise + n_c
    return signal, noise, per_signal, per_noise


def _row(kind: str, tensor: str, consumers: list[str], local, total) -> dict:
    """One table row. `sqnr_db` is the pair's own error where measured (activations), else vs
    FP32 (weights). Rows sort by `worst_channel_sqnr_db`: a per-tensor SQNR is dominated by
    the largest channels, and the classic INT8 failure (a few outlier channels stretch the
    range, the others round to a few levels) shows only per channel."""
    own = local if local is not None else total
    return {"kind": kind, "tensor": tensor, "consumers": consumers,
            "sqnr_db": _db(own[0], own[1]), "relative_error": _relative(own[0], own[1]),
            "worst_channel_sqnr_db": _worst_channel(own),
            "sqnr_vs_fp32_db": _db(total[0], total[1]) if total else None,
            "relative_error_vs_fp32": _relative(total[0], total[1]) if total else None}


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _relative(signal: float, noise: float) -> float:
    return math.sqrt(noise / signal) if signal > 0 else math.inf


def _worst_channel(energy) -> float:
    """Lowest SQNR over channels that carry signal (all-zero channels have nothing to lose)."""
    signal, noise, per_signal, per_noise = energy
    if per_signal is None or not np.any(per_signal > 0):
        return _db(signal, noise)
    live = per_signal > 0
    return min(_db(float(s), float(n)) for s, n in zip(per_signal[live], per_noise[live]))

"""TensorRT engines as deploy-directory artifacts: the registry's build step, runner and availability check."""

from __future__ import annotations

from segdeploy.backends.tensorrt.builder import EngineOptions
from segdeploy.errors import SegdeployError
from segdeploy.manifest import tool_versions
from segdeploy.manifest.names import ENGINE, tensorrt_engine
from segdeploy.manifest.records import TensorInfo, TensorRTVersion


def why_not_here(artifact) -> str | None:
    """Why an engine cannot run here (no TensorRT runtime, no GPU), or None."""
    from segdeploy.backends.tensorrt.device import gpu_info
    from segdeploy.backends.tensorrt.flavour import load_tensorrt

    try:
        load_tensorrt()
    except SegdeployError as exc:
        return f"no TensorRT runtime ({exc.message})"
    if not gpu_info():
        return "no CUDA GPU on this machine"
    return None


def open_runner(manifest, name: str, options):
    from segdeploy.backends.tensorrt.runner import TrtRunner

    artifact = manifest.artifact(name)
    return TrtRunner(manifest.directory / artifact.file, artifact, cuda_graph=options.cuda_graph)


def prepare(manifest, options, precisions):
    """(flavour, profile): the optimization profile checked against the export, and TensorRT loaded,
    before any long step (calibration) starts. `--graph-only` needs no TensorRT."""
    from segdeploy.backends.tensorrt.profiles import resolve_profile
    from segdeploy.manifest.names import FP32_GRAPH

    spec = manifest.spec
    inputs = [t.to_dict() for t in manifest.artifact(FP32_GRAPH.name).inputs]
    profile = resolve_profile(inputs, {spec.input_name: list(spec.input_shape)}, options.min_shapes, options.opt_shapes,
                              options.max_shapes)
    if options.graph_only:
        return None, profile
    from segdeploy.backends.tensorrt.flavour import load_tensorrt

    return load_tensorrt(), profile


def build(job) -> str | None:
    """`build --backend tensorrt`: an engine from the TensorRT-family precision graph (none with `--graph-only`)."""
    if job.options.graph_only:
        job.notes.append(f"{job.graph}: TensorRT-family graph made; no engine built (--graph-only)")
        return None
    flavour, profile = job.context
    name = build_engine_artifact(job.manifest, job.graph, job.precision, profile, job.options.engine, flavour, job.step)
    job.notes.extend(f"{name}: {note}" for note in (job.manifest.artifact(name).settings or {}).get("notes", []))
    return name


def build_engine_artifact(manifest, graph: str, precision: str, profile: dict, engine: EngineOptions,
                          flavour=None, step=lambda _: None) -> str:
    """Build and record `trt-<precision>` (model.<precision>.engine) from the precision graph `graph`."""
    from segdeploy.backends.tensorrt.builder import build_engine

    entry = manifest.artifact(graph)
    if entry.target not in ("tensorrt", "any", None):
        raise SegdeployError(
            f"{graph} is a {precision} graph made for {entry.target}, which TensorRT cannot take "
            "(it needs symmetric INT8 Q/DQ)",
            f"run `segdeploy build {manifest.directory} --precision {precision} --backend tensorrt`",
        )
    made = tensorrt_engine(precision)
    step(f"building TensorRT engine ({precision}) from {entry.file}")
    record = build_engine(manifest.verify(graph), manifest.directory / made.file, precision=precision,
                          profile=profile, options=engine, flavour=flavour)
    io = record["engine_io"]
    manifest.add_artifact(
        made.name, made.file, kind=ENGINE, precision=precision, backend="tensorrt", parent=graph,
        inputs=[TensorInfo.from_dict(t) for t in io["inputs"]], outputs=[TensorInfo.from_dict(t) for t in io["outputs"]],
        settings={k: v for k, v in record.items() if k != "engine_io"},
        tensorrt=TensorRTVersion.from_dict(record["tensorrt"]), compute_capabilities=record["compute_capabilities"],
        built_on_gpu=record["built_on_gpu"], builder_flags=record["builder_flags"],
        hardware_compatibility_level=record.get("hardware_compatibility_level"),
        tool_versions=tool_versions(),
    )
    return made.name

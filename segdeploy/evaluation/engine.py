"""The one evaluation engine: any set of predictors over batches, streaming confusion matrices.

A *predictor* (`Predictor`) runs one batch: a graph in a runtime, or the PyTorch model
(`runner_predictor` turns any runner into one). `evaluate` runs every predictor over every
batch and accumulates, per predictor:

* a confusion matrix **against the labels** (when the batches carry labels),
* a confusion matrix **against a reference**: another predictor of the same run (evaluated
  first on each batch) or class maps computed earlier (`reference=maps`), no labels needed,
* optionally one confusion matrix **per image** (for a bootstrap over images), the class
  maps themselves, and the raw outputs compared with the reference's (`OutputDiff`).

Scoring against labels follows a `ClassMapping` (`segdeploy.classes.match_classes`): a model
may output classes the dataset does not evaluate (void trained as a class, an ignore channel);
the matrices stay model_classes wide and only the evaluated classes are scored (`metrics`).

Class maps are compared at **label resolution** (argmax at model resolution, then back to
each image's size: the protocol of every mIoU segdeploy reports) or at **model resolution**
(`resolution="model"`: graph against graph on the same input, e.g. calibration checks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from segdeploy.classes import ClassInfo, ClassMapping, match_classes
from segdeploy.errors import SegdeployError
from segdeploy.evaluation.batches import Batch, BatchReader
from segdeploy.evaluation.compare import OutputDiff
from segdeploy.evaluation.outputs import class_map_batch, class_maps
from segdeploy.metrics import ConfusionMatrix, Scores, agreement_from_counts

RESOLUTIONS = ("label", "model")


@dataclass
class Predictor:
    """`run` maps what the graph takes to what it outputs; `takes_canvases`: it takes the resized
    uint8 N×H×W×3 images (fused preprocessing) instead of preprocessed N×3×H×W float32."""

    run: Callable[[np.ndarray], np.ndarray]
    takes_canvases: bool = False

    def __call__(self, batch: Batch) -> np.ndarray:
        data = batch.canvases if self.takes_canvases else batch.inputs
        if data is None:
            raise SegdeployError("this batch has no " + ("uint8 images" if self.takes_canvases else "preprocessed inputs"))
        return np.asarray(self.run(data))


def runner_predictor(runner, input_name: str = "input", takes_canvases: bool = False) -> Predictor:
    """An active runner (`infer({name: array}) -> {name: array}`) as a predictor of its first output."""
    return Predictor(lambda data: next(iter(runner.infer({input_name: data}).values())), takes_canvases)


def graph_predictor(runner, spec) -> Predictor:
    """An active runner of a graph described by `spec` (a `GraphSpec`): fed what that graph takes."""
    return runner_predictor(runner, spec.input_name, spec.fused_preprocess)


@dataclass
class PredictorResult:
    name: str
    vs_labels: ConfusionMatrix | None = None
    vs_reference: ConfusionMatrix | None = None
    per_image_vs_labels: list[np.ndarray] = field(default_factory=list)
    per_image_vs_reference: list[np.ndarray] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)  # kept with keep_maps
    outputs: OutputDiff | None = None  # raw outputs vs the reference's (compare_outputs)
    seconds: float = 0.0  # time spent inside the predictor

    @property
    def scores(self) -> Scores | None:
        return self.vs_labels.scores() if self.vs_labels is not None else None

    def agreement(self) -> dict | None:
        """Pixel agreement and mIoU against the reference (fractions), or None without one."""
        return agreement_from_counts(self.vs_reference.counts) if self.vs_reference is not None else None

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        """JSON-ready figures (percentages, like every report)."""
        out: dict = {"name": self.name, "predict_seconds": round(self.seconds, 3)}
        if self.vs_labels is not None:
            out.update(self.vs_labels.scores().to_dict(names))
        agree = self.agreement()
        if agree is not None:
            out["pixel_agreement"] = round(agree["pixel_agreement"] * 100, 4)
            out["miou_vs_reference"] = round(agree["miou_vs_reference"] * 100, 4)
        return out


@dataclass
class Evaluation:
    results: dict[str, PredictorResult]
    images: int
    class_names: tuple[str, ...] = ()  # of the scored classes
    classes: ClassMapping | None = None  # how model classes were scored against the labels

    def __getitem__(self, name: str) -> PredictorResult:
        return self.results[name]

    def to_dict(self) -> dict:
        return {"images": self.images, "predictors": {k: r.to_dict(self.class_names) for k, r in self.results.items()}}


def evaluate(
    predictors: Mapping[str, Predictor],
    batches: Iterable[Batch],
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    classes: ClassMapping | None = None,
    reference: str | Sequence[np.ndarray] | None = None,
    resolution: str = "label",
    input_hw: Sequence[int] | None = None,
    per_image: bool = False,
    keep_maps: bool = False,
    compare_outputs: bool = False,
    class_names: Sequence[str] = (),
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """Run every predictor over `batches` once (see the module docstring).

    `classes` says how model classes are scored against the labels (it gives the number of
    classes, the ignore index and the names); without it, `num_classes` classes are all scored
    (`ignore_index` skipped). `reference` names one of `predictors` (run first on each batch) or
    gives one class map per image computed earlier at the same resolution. `input_hw` (label resolution) is the model
    input size; `on_batch(n)` is told each batch's image count (progress display).
    """
    if not predictors:
        raise SegdeployError("nothing to evaluate: no predictor given")
    if classes is None:
        if num_classes is None:
            raise SegdeployError("evaluate needs num_classes or a class mapping")
        classes = ClassMapping(num_classes, num_classes, ignore_index, (), tuple(class_names) or tuple(map(str, range(num_classes))))
    if resolution not in RESOLUTIONS:
        raise SegdeployError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    named = isinstance(reference, str)
    if named and reference not in predictors:
        raise SegdeployError(f"the reference {reference!r} is not one of the predictors {', '.join(predictors)}")
    order = [reference, *[n for n in predictors if n != reference]] if named else list(predictors)
    results = {name: PredictorResult(name, outputs=OutputDiff() if compare_outputs and named and name != reference else None)
               for name in order}
    run = _Run(results, classes, resolution, input_hw, per_image, keep_maps)
    images = 0
    for batch in batches:
        given = None if reference is None or named else list(reference[images:images + batch.size])
        run.batch(batch, {name: predictors[name] for name in order}, reference if named else None, given)
        images += batch.size
        if on_batch is not None:
            on_batch(batch.size)
    return Evaluation(results, images, classes.evaluated_names, classes)


@dataclass
class _Run:
    results: dict[str, PredictorResult]
    classes: ClassMapping
    resolution: str
    input_hw: Sequence[int] | None
    per_image: bool
    keep_maps: bool

    def batch(self, batch: Batch, predictors: dict[str, Predictor], reference: str | None, given) -> None:
        reference_output, reference_maps = None, given
        for name, predict in predictors.items():
            result = self.results[name]
            start = time.perf_counter()
            output = predict(batch)
            result.seconds += time.perf_counter() - start
            maps = self.maps(output, batch)
            if name == reference:
                reference_output, reference_maps = output, maps
            elif result.outputs is not None and reference_output is not None:
                result.outputs.update(reference_output, output)
            self.accumulate(result, maps, batch.labels, None if name == reference else reference_maps)
            if self.keep_maps:
                result.maps += maps

    def maps(self, output: np.ndarray, batch: Batch) -> list[np.ndarray]:
        if self.resolution == "model":
            return list(class_map_batch(output))
        if batch.geometries is None:
            raise SegdeployError("label-resolution evaluation needs real images (this batch has no geometry)")
        return class_maps(output, batch.geometries, self.input_hw or batch.inputs.shape[2:], self.classes.model_classes)

    def accumulate(self, result: PredictorResult, maps, labels, reference_maps) -> None:
        # Against labels: only the evaluated classes are scored; against a reference (agreement): all classes.
        n, ignore, evaluated = self.classes.model_classes, self.classes.ignore_index, self.classes.evaluated
        for index, prediction in enumerate(maps):
            label = labels[index] if labels else None
            if label is not None:
                result.vs_labels = result.vs_labels or ConfusionMatrix(n, ignore, evaluated)
                self._update(result.vs_labels, result.per_image_vs_labels, label, prediction)
            if reference_maps is not None:
                result.vs_reference = result.vs_reference or ConfusionMatrix(n)
                self._update(result.vs_reference, result.per_image_vs_reference, reference_maps[index], prediction)

    def _update(self, matrix: ConfusionMatrix, per_image: list, truth, prediction) -> None:
        if not self.per_image:
            matrix.update(truth, prediction)
            return
        single = ConfusionMatrix(matrix.num_classes, matrix.ignore_index, matrix.evaluated)
        single.update(truth, prediction)
        matrix.merge(single)
        per_image.append(single.counts)


def evaluate_dataset(predictors: Predictor | Mapping[str, Predictor], dataset, preprocess, input_hw: Sequence[int], *,
                     batch_size: int = 8, num_classes: int | None = None, limit: int | None = None,
                     reference: str | None = None, compare_outputs: bool = False,
                     on_batch: Callable[[int], None] | None = None) -> Evaluation:
    """`evaluate` over a dataset read by `BatchReader`, at label resolution, with the dataset's
    classes (ignore index, names, classes not evaluated); a model with `num_classes` outputs more
    than the dataset's classes is scored by `match_classes`' rule. One bare predictor is named "model"."""
    if not isinstance(predictors, Mapping):
        predictors = {"model": predictors}
    data = dataset.classes
    if data is None and num_classes is None:
        raise SegdeployError(f"{dataset.root} has no classes.json; pass the number of classes")
    mapping = None if data is None else match_classes(ClassInfo.default(num_classes) if num_classes else data, data, dataset.root)
    reader = BatchReader(dataset, preprocess, input_hw, batch_size, limit=limit)
    return evaluate(predictors, reader, num_classes=num_classes, classes=mapping, reference=reference, input_hw=input_hw,
                    compare_outputs=compare_outputs, on_batch=on_batch)

"""The leave-one-out sensitivity ranking gives the same result in worker processes as in one."""

from __future__ import annotations

import onnx

from segdeploy.manifest import Manifest
from segdeploy.precision.calibration import select_images
from segdeploy.precision.drift import check_batches
from segdeploy.precision.graphs import Int8Maker, QuantOptions
from segdeploy.precision.sensitivity import rank_nodes
from segdeploy.graph_spec import GraphSpec


def test_workers_give_the_same_ranking_as_one_process(outlier, outlier_images, tmp_path):
    manifest = Manifest.load(outlier)
    calib = select_images(outlier_images[0], 12, warn=lambda _: None)
    maker = Int8Maker(manifest, calib, QuantOptions(), lambda _: None)
    try:
        maker.quantize("onnxruntime", tmp_path / "naive.onnx")
        fp32, naive = onnx.load(str(maker.prepared())), onnx.load(str(tmp_path / "naive.onnx"))
    finally:
        maker.close()
    batches, _ = check_batches(manifest, calib)
    feeds = [GraphSpec.of(manifest).feed(b) for b in batches]
    progress = {1: [], 2: []}
    one = rank_nodes(fp32, naive, feeds, on_node=lambda done, total: progress[1].append((done, total)))
    two = rank_nodes(fp32, naive, feeds, on_node=lambda done, total: progress[2].append((done, total)), workers=2)
    assert two == one  # every figure bit for bit, in the same order
    assert len({r["gain"] for r in one}) == len(one) > 2  # distinct gains: a mix-up of nodes and figures would show
    assert one[0]["node"] == "/model/head/Conv"
    assert progress[1] == progress[2] == [(i, len(one)) for i in range(1, len(one) + 1)]

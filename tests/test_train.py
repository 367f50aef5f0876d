"""The calib/ generator, the shipped calib/ set and demo model, and the training loop."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.data import open_dataset
from segdeploy.errors import SegdeployError

REPO = Path(__file__).resolve().parents[1]
CALIB = REPO / "calib"
DEMO = CALIB / "demo"


def _make_calib():
    spec = importlib.util.spec_from_file_location("make_calib", REPO / "scripts" / "make_calib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_generator_is_deterministic_and_valid(tmp_path):
    make_calib = _make_calib()
    make_calib.write_dataset(tmp_path / "a", count=6, seed=5)
    make_calib.write_dataset(tmp_path / "b", count=6, seed=5)
    make_calib.write_dataset(tmp_path / "c", count=6, seed=6)
    a, b, c = (open_dataset(tmp_path / x) for x in "abc")
    assert len(a) == 6 and a.classes.num_classes == 6 and a.classes.ignore_index == 255
    for sa, sb, sc in zip(a, b, c):
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.label, sb.label)
    assert any(not np.array_equal(sa.label, sc.label) for sa, sc in zip(a, c))
    train = (tmp_path / "a" / "splits" / "train.txt").read_text().split()
    val = (tmp_path / "a" / "splits" / "val.txt").read_text().split()
    assert not set(train) & set(val) and sorted(train + val) == sorted(s.stem for s in a)


def test_shipped_calib_set():
    dataset = open_dataset(CALIB)
    assert len(dataset) >= 100 and dataset.classes.num_classes == 6
    assert _folder_bytes(CALIB) <= 10_000_000
    val = open_dataset(CALIB, split="val")
    train = open_dataset(CALIB, split="train")
    assert len(val) + len(train) == len(dataset)
    present = np.zeros(256, bool)
    for _, _, label_path in dataset.items[:40]:
        present[np.unique(np.asarray(Image.open(label_path)))] = True
    assert present[: dataset.classes.num_classes].all(), "every class should appear in the first 40 scenes"


def test_shipped_calib_matches_its_generator(tmp_path):
    make_calib = _make_calib()
    make_calib.write_dataset(tmp_path / "regen", count=3, seed=0)
    for stem in ("scene_0000", "scene_0001", "scene_0002"):
        shipped = np.asarray(Image.open(CALIB / "labels" / f"{stem}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "regen" / "labels" / f"{stem}.png")), shipped)


@pytest.mark.skipif(not (DEMO / "model.json").is_file(), reason="demo model not trained yet (scripts/train.py --demo)")
def test_demo_model_reproduces_its_recorded_val_miou():
    from segdeploy.backends.torch import TorchRunner
    from segdeploy.evaluation.engine import evaluate_dataset, runner_predictor
    from segdeploy.models.loading import load_model
    from segdeploy.preprocess import Preprocess

    meta = json.loads((DEMO / "model.json").read_text())
    assert (DEMO / meta["weights"]).stat().st_size <= 10_000_000
    model = load_model(meta["architecture"], num_classes=meta["num_classes"], model_kwargs=meta["model_kwargs"],
                       weights=DEMO / meta["weights"]).module  # fmt: skip
    _, _, h, w = meta["input_shape"]
    with TorchRunner(model) as runner:
        result = evaluate_dataset(runner_predictor(runner), open_dataset(CALIB, split="val"),
                                  Preprocess.from_dict(meta["preprocess"]), (h, w))
    miou = result.results["model"].scores.miou * 100
    assert miou == pytest.approx(meta["val_miou"], abs=0.01)
    assert 30 < miou < 99  # meaningful but imperfect


class _Interrupt(Exception):
    pass


def _interrupt_after_first_epoch(line: str) -> None:
    if line.startswith("epoch 1/"):
        raise _Interrupt  # like Ctrl-C once epoch 1 is checkpointed


def test_train_resume_continues_an_interrupted_run_exactly(tmp_path):
    import torch

    from segdeploy.models.loading import load_model
    from segdeploy.train import TrainConfig, train

    _make_calib().write_dataset(tmp_path / "data", count=8, seed=1)

    def config(out):
        return TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / out), model="unet",
                           model_kwargs={"width": 0.0625}, input_hw=(32, 48), epochs=2, batch_size=4)  # fmt: skip

    straight = train(config("straight"), log=lambda _: None)
    with pytest.raises(_Interrupt):
        train(config("resumed"), log=_interrupt_after_first_epoch)
    lines = []
    resumed = train(config("resumed"), resume=True, log=lines.append)
    assert lines[0].startswith("resumed from") and "at epoch 1" in lines[0]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    last_a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    last_b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    for key in last_a:
        torch.testing.assert_close(last_a[key], last_b[key], rtol=1e-5, atol=1e-6)

    saved = json.loads((tmp_path / "resumed" / "model.json").read_text())
    assert saved["input_shape"] == [1, 3, 32, 48] and saved["num_classes"] == 6 and saved["epochs"] == 2
    assert saved["val_miou"] == max(h["val_miou"] for h in saved["history"])
    assert json.loads((tmp_path / "resumed" / "classes.json").read_text())["ignore_index"] == 255
    load_model("unet", num_classes=6, model_kwargs={"width": 0.0625}, weights=tmp_path / "resumed" / "best.pth")
    with pytest.raises(SegdeployError, match="already trained"):
        train(config("resumed"), resume=True, log=lambda _: None)


def test_train_rejects_bad_input_size(tmp_path):
    from segdeploy.train import TrainConfig, train

    _make_calib().write_dataset(tmp_path / "data", count=4, seed=1)
    with pytest.raises(SegdeployError, match="divisible by 16"):
        train(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), input_hw=(30, 48)))


def test_train_script_reports_user_errors(capsys):
    spec = importlib.util.spec_from_file_location("train_script", REPO / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--data", "calib"]) == 1
    assert module.main(["--data", "calib", "--out", "x", "--input", "96by128"]) == 1
    assert module.main(["--data", "calib", "--out", "x", "--model-kwargs", "{width"]) == 1
    err = capsys.readouterr().err
    assert "--input must be HxW" in err and "--model-kwargs is not valid JSON" in err

#!/usr/bin/env python
"""Train a segdeploy registry model on a canonical-layout dataset, on the CPU.

    python scripts/train.py --data calib --out runs/unet --model unet \
        --model-kwargs '{"width": 0.25}' --input 96x128 --epochs 30
    python scripts/train.py ... --resume          # continue from runs/unet/last.pt

The shipped demo checkpoint (calib/demo/) was made with `python scripts/train.py --demo`.
See segdeploy/train.py for what the output folder holds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: E402

from segdeploy.errors import SegdeployError  # noqa: E402
from segdeploy.models.loading import parse_model_kwargs  # noqa: E402
from segdeploy.preprocess import Preprocess  # noqa: E402
from segdeploy.train import TrainConfig, train  # noqa: E402

# The demo model: small enough to ship (< 1 MB) and to train in a few CPU minutes.
DEMO = dict(data="calib", out="calib/demo", model="unet", model_kwargs={"width": 0.125}, input_hw=(96, 128), epochs=30)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="train the shipped demo model (calib/ -> calib/demo/)")
    parser.add_argument("--data", help="dataset folder (canonical layout, with train/val splits)")
    parser.add_argument("--out", help="output folder for checkpoints and model.json")
    parser.add_argument("--model", default="unet", help="registry name (see `segdeploy models`)")
    parser.add_argument("--model-kwargs", default="{}", help='JSON, e.g. \'{"width": 0.25}\'')
    parser.add_argument("--input", default="96x128", help="model input HxW")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--resize", default="stretch", choices=("stretch", "letterbox"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    return parser.parse_args(argv)


def config_from(args) -> TrainConfig:
    if args.demo:
        os.chdir(REPO)  # DEMO's paths are relative to the repository, and so recorded in model.json
        return TrainConfig(**DEMO, threads=args.threads)
    if not args.data or not args.out:
        raise SegdeployError("--data and --out are required (or --demo)")
    try:
        h, w = (int(v) for v in args.input.lower().split("x"))
    except ValueError:
        raise SegdeployError(f"--input must be HxW, e.g. 96x128; got {args.input!r}") from None
    return TrainConfig(
        data=args.data, out=args.out, model=args.model, model_kwargs=parse_model_kwargs(args.model_kwargs),
        input_hw=(h, w), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        train_split=args.train_split, val_split=args.val_split, seed=args.seed, threads=args.threads,
        preprocess=Preprocess(resize=args.resize).to_dict(),
    )  # fmt: skip


stderr = Console(stderr=True, soft_wrap=True)


class EpochBar:
    """A transient progress bar per epoch on stderr (segdeploy.train reports, this script draws)."""

    def __init__(self):
        self.bar = self.task = self.title = None

    def __call__(self, title: str, done: int, total: int, loss: float) -> None:
        if title != self.title:
            self.close()
            columns = (TextColumn(title), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn())
            self.bar, self.title = Progress(*columns, console=stderr, transient=True), title
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, loss=float("nan"))
        self.bar.update(self.task, completed=done, loss=loss)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def main(argv=None) -> int:
    args = parse_args(argv)
    bar = EpochBar()
    try:
        meta = train(config_from(args), resume=args.resume, log=lambda m: (bar.close(), stderr.print(m, highlight=False)),
                     progress=bar)
    except SegdeployError as exc:
        stderr.print(f"[bold red]error:[/] {exc}")
        return 1
    finally:
        bar.close()
    if args.demo:  # the shipped demo keeps best.pth + model.json + classes.json only
        (REPO / DEMO["out"] / "last.pt").unlink(missing_ok=True)
    print(f"best val mIoU {meta['val_miou']:.2f} after {meta['epochs']} epochs ({meta['train_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Make a 12-class CamVid model: the 11 CamVid classes plus *void* trained as a class.

Many CamVid models (SegNet/ENet-style training) output 12 channels: the 11 classes and void.
This script derives one from the shared 11-class LR-ASPP MobileNetV3 (../shared/models): the
backbone and the head's features stay as they are, and the two 1×1 classifiers are retrained for
12 classes (void = index 11, CamVid's `ignore_index`) on CamVid *train* by softmax regression on
cached features, so it takes a few CPU minutes. The result is a state_dict for
`torchvision.models.segmentation.lraspp_mobilenet_v3_large(num_classes=12)`.

    python scripts/make_camvid_void_model.py --out /tmp/camvid_void12.pth

It is derived from CamVid (research use): keep it outside this repository.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
INPUT_HW = (240, 320)
VOID = 11


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=SHARED / "camvid")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "camvid_lraspp_mbv3.pth")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load_frame(image: Path, label: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Input tensor (the model's training preprocessing) and the label at the model's input size."""
    rgb = Image.open(image).convert("RGB").resize(INPUT_HW[::-1], Image.BILINEAR)
    x = (np.asarray(rgb, dtype=np.float32) - MEAN) / STD
    y = np.asarray(Image.open(label).resize(INPUT_HW[::-1], Image.NEAREST), dtype=np.int64)
    return torch.from_numpy(x.transpose(2, 0, 1).copy()), torch.from_numpy(y.copy())


@torch.no_grad()
def head_features(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the two classifiers read: the low-level features and the upsampled, gated high ones."""
    features = model.backbone(x[None])
    head = model.classifier
    high = head.cbr(features["high"]) * head.scale(features["high"])
    high = F.interpolate(high, size=features["low"].shape[-2:], mode="bilinear", align_corners=False)
    return features["low"][0], high[0]


def widen(conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
    """The 11-class 1×1 classifier with a 12th (void) output, starting at zero weight."""
    wide = torch.nn.Conv2d(conv.in_channels, conv.out_channels + 1, 1)
    with torch.no_grad():
        wide.weight.zero_()
        wide.bias.zero_()
        wide.weight[: conv.out_channels] = conv.weight
        wide.bias[: conv.out_channels] = conv.bias
    return wide


def main() -> None:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=11)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    frames = sorted((args.camvid / "train" / "images").glob("*"))
    print(f"caching head features of {len(frames)} CamVid train frames …", flush=True)
    cache = []
    for image in frames:
        x, y = load_frame(image, args.camvid / "train" / "labels" / f"{image.stem}.png")
        cache.append((*head_features(model, x), y))
    head = model.classifier
    low, high = widen(head.low_classifier), widen(head.high_classifier)
    optimizer = torch.optim.Adam(list(low.parameters()) + list(high.parameters()), lr=1e-2)
    for epoch in range(args.epochs):
        order, total = torch.randperm(len(cache)).tolist(), 0.0
        for start in range(0, len(order), 8):
            batch = [cache[i] for i in order[start:start + 8]]
            logits = low(torch.stack([b[0] for b in batch])) + high(torch.stack([b[1] for b in batch]))
            logits = F.interpolate(logits, size=INPUT_HW, mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, torch.stack([b[2] for b in batch]))  # void is a class here
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(cache):.4f}", flush=True)
    head.low_classifier, head.high_classifier = low, high
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out} (lraspp_mobilenet_v3_large, num_classes=12, class 11 = void)")


if __name__ == "__main__":
    main()

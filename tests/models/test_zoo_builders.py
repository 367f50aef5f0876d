"""The zoo's builders: registry listing, the papers' parameter counts, the papers' layer
choices (ASPP rates, multi-grid, decoder widths), option validation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.errors import UsageError
from segdeploy.models import get_spec
from segdeploy.models.aspp import ASPP

ZOO = [
    "fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus",
    "deeplabv3plus_resnet50", "pspnet", "dilatednet", "fcdensenet56", "fcdensenet67", "fcdensenet103", "aspp",
]  # fmt: skip


def test_models_command_lists_every_architecture_with_dynamic_hw():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    missing = [name for name in ZOO if name not in rows]
    assert not missing
    assert all(rows[name]["dynamic_hw"] is True for name in ZOO)
    assert rows["fcdensenet103"]["size_multiple"] == 32 and rows["segnet"]["size_multiple"] == 1


# Parameter counts the papers report (millions), at the papers' class counts.
PAPER_PARAMS = [
    ("fcn8s", 21, 134.0, 0.02),  # Long et al., Table 1: FCN-VGG16 134M
    ("segnet", 12, 29.5, 0.02),  # Badrinarayanan et al., Table: 29.5M
    ("deeplabv1", 21, 20.5, 0.02),  # Chen et al. 2015, DeepLab-LargeFOV: 20.5M
    ("fcdensenet56", 11, 1.5, 0.10),  # Jégou et al., Table 2
    ("fcdensenet67", 11, 3.5, 0.05),
    ("fcdensenet103", 11, 9.4, 0.03),
]


@pytest.mark.parametrize("name, classes, millions, tolerance", PAPER_PARAMS)
def test_parameter_count_matches_paper(name, classes, millions, tolerance):
    count = get_spec(name).parameter_count(classes) / 1e6
    assert abs(count - millions) <= tolerance * millions, f"{name}: {count:.2f}M vs paper {millions}M"


def _dilations(module: nn.Module) -> list[int]:
    return [m.dilation[0] for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@pytest.mark.parametrize("output_stride, rates", [(16, [6, 12, 18]), (8, [12, 24, 36])])
def test_deeplabv3_aspp_rates_double_at_output_stride_8(output_stride, rates):
    with torch.device("meta"):
        model = get_spec("deeplabv3").build(num_classes=3, output_stride=output_stride)
    assert _dilations(model.aspp) == rates
    assert len(model.aspp.branches) == 5  # 1×1, three atrous 3×3, image pooling
    multi_grid = [block.conv2.dilation[0] for block in model.backbone.layer4]
    assert multi_grid == ([2, 4, 8] if output_stride == 16 else [4, 8, 16])


def test_aspp_module_on_its_own():
    aspp = ASPP(32, 16, rates=(2, 4, 6), num_classes=5).eval()
    out = aspp(torch.randn(2, 32, 9, 14))
    assert out.shape == (2, 5, 9, 14)
    branch_bn = [any(isinstance(m, nn.BatchNorm2d) for m in b.modules()) for b in aspp.branches]
    assert branch_bn == [True] * 5
    assert ASPP(32, 16).eval()(torch.randn(1, 32, 7, 5)).shape == (1, 16, 7, 5)


def test_deeplabv3plus_xception_and_decoder_layout():
    with torch.device("meta"):
        model = get_spec("deeplabv3plus").build(num_classes=3)
    assert len(model.backbone.middle) == 16
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())  # strided separable convs instead
    assert model.low_level[0].out_channels == 48
    depthwise = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels for m in depthwise)


def test_deeplabv2_sums_four_atrous_branches():
    with torch.device("meta"):
        model = get_spec("deeplabv2").build(num_classes=3)
    assert [b.dilation[0] for b in model.aspp.branches] == [6, 12, 18, 24]
    assert [len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]  # ResNet-101


def test_pspnet_pyramid_bins():
    model = get_spec("pspnet").build(num_classes=3, width=0.0625)
    assert [stage[0].output_size for stage in model.ppm.stages] == [1, 2, 3, 6]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("fcn8s", {"width": 0}),
        ("segnet", {"num_classes": 0}),
        ("deeplabv3", {"output_stride": 12}),
        ("deeplabv3", {"depth": 34}),
        ("deeplabv3plus", {"backbone": "vgg"}),
        ("dilatednet", {"context": "huge"}),
        ("pspnet", {"in_channels": 0}),
        ("fcn32s", {"pretrained": True}),
    ],
)
def test_bad_options_are_usage_errors(name, kwargs):
    with pytest.raises(UsageError):
        get_spec(name).build(**{"num_classes": 3, **kwargs})


def test_in_channels_is_honoured():
    model = get_spec("fcdensenet56").build(num_classes=2, in_channels=1, width=0.0625).eval()
    assert model(torch.randn(1, 1, 64, 96)).shape == (1, 2, 64, 96)

"""The built-in backbones: ResNet-32 (CIFAR), torchvision ResNet-50 / ViT-B/16, build_backbone."""

from __future__ import annotations

import pytest
import torch

from lt_bench.backbones import backbone_options, build_backbone
from lt_bench.backbones.resnet_cifar import ShortcutA
from lt_bench.errors import LtBenchError
from lt_bench.registry import get_registry, reset_registry


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# -- resnet32 -------------------------------------------------------------------------------------
def resnet32_hand_count(num_classes: int) -> int:
    def conv(cin, cout):  # 3×3, no bias
        return cin * cout * 9

    def bn(c):  # weight and bias
        return 2 * c

    total = conv(3, 16) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(5):
            total += conv(cin, width) + bn(width) + conv(width, width) + bn(width)
            cin = width
    return total + 64 * num_classes + num_classes  # classifier; option-A shortcuts add nothing


@pytest.mark.parametrize("num_classes", [10, 100])
def test_resnet32_parameter_count_and_shape(num_classes):
    model = build_backbone("resnet32", num_classes)
    assert n_params(model) == resnet32_hand_count(num_classes)
    if num_classes == 10:
        assert n_params(model) == 464_154  # the figure quoted for CIFAR-10 ResNet-32
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, num_classes)


def test_resnet32_depth_and_strides():
    model = build_backbone("resnet32", 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 31  # + the classifier = 32 weighted layers
    assert [c.stride[0] for c in convs].count(2) == 2
    feats = {}
    model.layer3.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    model(torch.randn(1, 3, 32, 32))
    assert feats["x"].shape == (1, 64, 8, 8)


def test_option_a_shortcut_is_parameter_free_and_zero_pads():
    model = build_backbone("resnet32", 10)
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2
    assert all(sum(1 for _ in s.parameters()) == 0 for s in shortcuts)
    shortcut = model.layer2[0].shortcut
    x = torch.randn(2, 16, 16, 16)
    y = shortcut(x)
    assert y.shape == (2, 32, 8, 8)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()


def test_resnet32_kaiming_init():
    torch.manual_seed(0)
    model = build_backbone("resnet32", 10)
    w = model.layer3[1].conv1.weight  # fan_in = 64·9; Kaiming normal std = sqrt(2 / fan_in)
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.003


def test_resnet32_channels_last_bf16_autocast():
    torch.manual_seed(0)
    model = build_backbone("resnet32", 10).eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.float32 and out.shape == (4, 10)  # the classifier stays fp32
    assert torch.allclose(out.float(), ref, rtol=0.1, atol=0.1 * ref.abs().max().item())
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x.to(memory_format=torch.channels_last)).float().logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(model.conv1.weight.grad).all()


# -- torchvision ------------------------------------------------------------------------------------
def test_resnet50_shape():
    model = build_backbone("resnet50", 7).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_vit_b_16_small_image_size():
    model = build_backbone("vit_b_16", 5, image_size=32).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(LtBenchError, match="multiple of 16"):
        build_backbone("vit_b_16", 5, image_size=40)


def test_resnet50_local_weights_and_classifier_replacement(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("resnet50", 10)
    path = tmp_path / "r50.pth"
    # a DataParallel-style checkpoint nested under "state_dict" is accepted too
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)

    same = build_backbone("resnet50", 10, weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key

    other = build_backbone("resnet50", 3, weights=str(path))
    assert other.fc.weight.shape == (3, 2048)
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(other.state_dict()[key], value), key


def test_vit_local_weights_other_image_size(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("vit_b_16", 4, image_size=32)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("vit_b_16", 4, image_size=48, weights=str(path))
    assert model.encoder.pos_embedding.shape == (1, 10, 768)  # 3×3 patches + class token
    assert torch.equal(model.conv_proj.weight, source.conv_proj.weight)
    assert torch.equal(model.heads.head.weight, source.heads.head.weight)
    assert model.eval()(torch.randn(1, 3, 48, 48)).shape == (1, 4)


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(LtBenchError, match="nope.pth"):
        build_backbone("resnet50", 10, weights=str(missing))
    with pytest.raises(LtBenchError, match="nope.pth"):
        build_backbone("vit_b_16", 10, weights=str(missing), image_size=32)


def test_weights_of_another_architecture_is_an_error(tmp_path):
    path = tmp_path / "r32.pth"
    torch.save(build_backbone("resnet32", 10).state_dict(), path)
    with pytest.raises(LtBenchError, match="r32.pth"):
        build_backbone("resnet50", 10, weights=str(path))


# -- build_backbone -------------------------------------------------------------------------------
def test_registered_backbones_and_options():
    table = get_registry().table("backbones")
    assert {"resnet32", "resnet50", "vit_b_16", "vl_ltr"} <= set(table)
    assert table["resnet32"].plugin == "backbones"
    assert backbone_options("resnet50") == {"weights": None}
    assert backbone_options("vit_b_16") == {"weights": None, "image_size": 224}
    assert "class_names" not in backbone_options("vl_ltr")


def test_unknown_option_is_named():
    with pytest.raises(LtBenchError, match=r"'weigths'.*did you mean 'weights'"):
        build_backbone("resnet50", 10, weigths="x.pth")
    with pytest.raises(LtBenchError, match="unknown backbone 'resnet_32'"):
        build_backbone("resnet_32", 10)


def test_class_names_only_for_factories_declaring_them(tmp_path):
    plugin = tmp_path / "names_plugin.py"
    plugin.write_text(
        "import torch, lt_bench\n"
        "SEEN = {}\n"
        "def with_names(num_classes, *, class_names=None, width=2):\n"
        "    SEEN['names'] = class_names\n"
        "    return torch.nn.Linear(width, num_classes)\n"
        "def without_names(num_classes, *, width=2):\n"
        "    return torch.nn.Linear(width, num_classes)\n"
        "@lt_bench.hookimpl\n"
        "def lt_bench_register_backbones(register):\n"
        "    register('with_names', with_names)\n"
        "    register('without_names', without_names)\n"
    )
    reset_registry()
    try:
        registry = get_registry([str(plugin)])
        module = registry.pm.get_plugin(str(plugin))
        build_backbone("with_names", 2, class_names=["cat", "dog"], width=3)
        assert module.SEEN["names"] == ["cat", "dog"]
        assert build_backbone("without_names", 2, class_names=["cat", "dog"]).out_features == 2
        with pytest.raises(LtBenchError, match="2 class names given for 3 classes"):
            build_backbone("with_names", 3, class_names=["cat", "dog"])
    finally:
        reset_registry()


@pytest.mark.parametrize("name", ["resnet32", "resnet50", "vit_b_16", "vl_ltr"])
def test_backbone_config_files_list_every_option_with_its_default(name):
    import yaml

    from lt_bench.config import config_dir

    data = yaml.safe_load((config_dir() / "backbone" / f"{name}.yaml").read_text())["backbone"]
    assert data.pop("name") == name
    assert data == backbone_options(name)

"""The built-in backbones: CIFAR ResNet-32, torchvision ResNet-50 and ViT-B/16, and VL-LTR."""

from __future__ import annotations

import lt_bench
from lt_bench.backbones.resnet_cifar import resnet32
from lt_bench.backbones.torchvision_models import resnet50, vit_b_16
from lt_bench.backbones.vl_ltr import vl_ltr


@lt_bench.hookimpl
def lt_bench_register_backbones(register):
    register("resnet32", resnet32)
    register("resnet50", resnet50)
    register("vit_b_16", vit_b_16)
    register("vl_ltr", vl_ltr)

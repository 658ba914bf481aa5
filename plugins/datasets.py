"""The built-in long-tailed data sets (the factories live in ``lt_bench.data.builders``)."""

from __future__ import annotations

import lt_bench
from lt_bench.data import builders


@lt_bench.hookimpl
def lt_bench_register_datasets(register):
    register("cifar10_lt", builders.cifar10_lt,
             "CIFAR-10-LT: pickled CIFAR-10, its ImageFolder tree or .tar.gz, exp/step profile")
    register("cifar100_lt", builders.cifar100_lt,
             "CIFAR-100-LT: pickled CIFAR-100, its ImageFolder tree or .tar.gz, exp/step profile")
    register("imagenet_lt", builders.imagenet_lt,
             "ImageNet-LT from the OLTR file lists (ImageNet_LT_train.txt / _test.txt)")
    register("places_lt", builders.places_lt,
             "Places-LT from the OLTR file lists (Places_LT_train.txt / _test.txt)")
    register("inat2018", builders.inat2018,
             "iNaturalist 2018 from train2018.json / val2018.json (COCO style)")
    register("image_folder_lt", builders.image_folder_lt,
             "any balanced ImageFolder (train/ and test/ or val/), made long-tailed")

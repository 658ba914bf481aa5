"""``lt-bench train``: one run (one seed) of one method, printing the accuracy at the end."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "train", help="train and evaluate one method (one seed)",
        description="Train one run and print top-1 accuracy overall and for the many / medium / "
                    "few-shot classes (final epoch and best epoch). Arguments are YAML files and "
                    "key=value overrides, applied in order. Groups: dataset=NAME, backbone=NAME, "
                    "method=NAME, protocol=NAME (demo, quick, paper_cifar, zheng_ng_code, "
                    "ldam_cifar, vl_ltr_*). An interrupted "
                    "run continues from its last epoch when started again with the same config.",
        epilog="example: lt-bench train dataset=cifar10_lt imbalance=100 "
               "data.root=../shared/data method=dv protocol=quick",
    )
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml|KEY=VALUE")
    parser.set_defaults(func=run)


def print_results(result) -> None:
    from lt_bench.run.loop import format_accuracy  # here, not at the top: it imports torch

    print(f"\n{result.method} on {result.dataset} (imbalance {result.imbalance}, "
          f"seed {result.seed}), {result.wall_time_s:.0f} s")
    for which in ("final", "best"):
        score = result.score(which)
        print(f"  {which:5s} (epoch {score.epoch + 1}): {format_accuracy(score)}")
    print(f"  run folder: {result.run_dir}")


def run(args) -> int:
    # here, not at the top: it imports omegaconf
    from lt_bench.config import load_config, split_args
    from lt_bench.run.train import train  # torch and the plugins load only when training

    paths, overrides = split_args(args.args)
    cfg = load_config(paths, overrides)
    results = train(cfg)
    if not cfg.quiet:
        print_results(results)
    return 0

"""Hunt the bf16 CPU kernel that turns finite inputs into non-finite outputs, for an upstream report.

    python experiments/bf16_nan_repro.py [--trials 50] [--out bf16_nan_case.pt]

What it replays: ``tests/test_configs_run.py``'s ``vl_ltr_inat2018`` run (the VL-LTR head on a
torchvision ResNet-50 tower, synthetic 32×32 images, batch 128) whose first bf16 step gave
non-finite logits about once in 8 on a 2-core Intel Xeon with AMX. Each trial initialises the
model (seed 0, as the test, unless ``--seeds N`` cycles through N seeds) and runs the first training batch forward (and backward) under bf16
autocast, with a hook on every leaf module. The first module whose inputs are all finite but
whose output is not is reported with its shapes (a convolution's K = C_in·kh·kw, the length a
brgemm kernel reduces over; oneDNN's AMX K-tail defect, uxlfoundation/oneDNN#5717, needs
K % 32 != 0), the oneDNN version, the CPU, and whether the same module in fp32 and a second bf16
call on the same tensors agree. The offending module's input and weights are saved to ``--out``,
so the case replays without lt_bench: ``torch.load`` it and call ``F.conv2d`` under bf16 autocast.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ARGS = ["protocol=vl_ltr_inat2018", "dataset=synthetic_lt", "imbalance=10", "protocol.epochs=1",
        "tracking.tracker=local", "quiet=true", "precision=bf16", "workspace=/tmp/unused"]


def onednn_version() -> str:
    found = re.search(r"(?:oneDNN|MKL-DNN) v[\d.]+", torch.__config__.show())
    return found.group(0) if found else "unknown"


def trial(seed: int, cfg, data) -> dict | None:
    """The first module of seed ``seed``'s model to go non-finite from finite inputs, if any."""
    from lt_bench.run import assemble

    assemble.seed_everything(seed, False)
    model = assemble.build_model(cfg, assemble.resolve_method(cfg), data,
                                 torch.device("cpu")).train()
    found: list[dict] = []

    def hook(module, inputs, output):
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        outs = output if isinstance(output, tuple) else (output,)
        if found or not all(torch.isfinite(t).all() for t in tensors):
            return
        bad = sum(int((~torch.isfinite(o)).sum()) for o in outs if isinstance(o, torch.Tensor))
        if bad:
            found.append(describe(module, tensors, outs, bad))

    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    images, targets = next(iter(data.train_batches(0, cfg.protocol.batch_size,
                                                   device="cpu", seed=seed)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    logits = out[0] if isinstance(out, tuple) else out
    torch.nn.functional.cross_entropy(logits.float(), targets).backward()
    for h in handles:
        h.remove()
    if found:
        found[0]["module_name"] = names.get(found[0].pop("module"), "?")
    return found[0] if found else None


def describe(module, inputs, outs, bad: int) -> dict:
    case = {"module": module, "type": type(module).__name__, "bad": bad,
            "total": sum(o.numel() for o in outs if isinstance(o, torch.Tensor)),
            "input_shapes": [tuple(t.shape) for t in inputs],
            "input_max": max(float(t.abs().max()) for t in inputs)}
    if isinstance(module, torch.nn.Conv2d):
        case["K"] = module.in_channels // module.groups * module.kernel_size[0] \
            * module.kernel_size[1]
        with torch.autocast("cpu", enabled=False):
            fp32 = module(inputs[0].float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            again = module(inputs[0])
        case["fp32_finite"] = bool(torch.isfinite(fp32).all())
        case["bf16_again_finite"] = bool(torch.isfinite(again).all())
        case["tensors"] = {"input": inputs[0].detach().clone(),
                           "weight": module.weight.detach().clone(),
                           "stride": module.stride, "padding": module.padding}
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=1,
                        help="cycle through this many initialisations (the test uses seed 0)")
    parser.add_argument("--out", default="bf16_nan_case.pt")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from lt_bench.config import load_config, to_dict
    from lt_bench.data import DataConfig, load_data
    from lt_bench.workspace.provenance import cpu_model

    cfg = load_config([], ARGS)
    data = load_data(cfg.dataset, cfg.imbalance, DataConfig(**to_dict(cfg.data)))
    print(f"CPU {cpu_model()}, torch {torch.__version__}, {onednn_version()}, "
          f"{torch.get_num_threads()} threads; {args.trials} trials", flush=True)
    hits = 0
    for t in range(args.trials):
        seed = t % args.seeds
        case = trial(seed, cfg, data)
        if case is None:
            continue
        hits += 1
        tensors = case.pop("tensors", None)
        print(f"trial {t} (seed {seed}): {case}", flush=True)
        if tensors is not None and hits == 1:
            torch.save(tensors, args.out)
            print(f"saved the first case's input and weights to {args.out}")
    print(f"non-finite outputs from finite inputs in {hits} of {args.trials} trials")


if __name__ == "__main__":
    main()

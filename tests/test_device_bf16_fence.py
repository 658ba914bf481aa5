"""A bf16 kernel that returns non-finite outputs from finite inputs (as one did on an AMX CPU)
costs one batch in fp32, not the run, and leaves no trace in BatchNorm's statistics."""

import math

import torch

from lt_bench.config import load_config
from lt_bench.device.bf16_fence import Bf16Fence
from lt_bench.run import assemble
from lt_bench.run.train import train

TINY = ["dataset=synthetic_lt", "imbalance=10", "protocol.epochs=2", "tracking.tracker=local",
        "quiet=true", "precision=bf16", "method=dv", "protocol.start_epoch=1"]


def faulty_first_conv(model: torch.nn.Module, faults: list[int]) -> None:
    """The first Conv2d returns all-NaN on its first bf16 call, as the AMX kernel did."""
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def hook(module, inputs, output):
        if torch.is_autocast_enabled("cpu") and module.training and not faults:
            faults.append(1)
            return torch.full_like(output, float("nan"))
        return output

    conv.register_forward_hook(hook)


def test_a_faulty_bf16_batch_is_redone_in_fp32_and_the_run_finishes(monkeypatch, tmp_path):
    faults: list[int] = []
    built = assemble.build_model

    def build_model(cfg, method, data, device):
        model = built(cfg, method, data, device)
        faulty_first_conv(model, faults)
        return model

    monkeypatch.setattr(assemble, "build_model", build_model)
    results = train(load_config([], TINY + [f"workspace={tmp_path}"]))
    assert faults == [1]
    assert results.status == "FINISHED"
    assert results.history[0]["train/fp32_redone"] == 1
    assert "train/fp32_redone" not in results.history[1]  # only epochs that needed it
    assert math.isfinite(results.final.acc)
    assert all(math.isfinite(w) for epoch in results.class_weights for w in epoch)
    state = torch.load(next(tmp_path.glob("runs/*/checkpoint.pt")), weights_only=False)
    for name, value in state["model"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name  # BatchNorm's running statistics too


def test_the_fence_restores_batchnorm_before_the_second_pass():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.LazyLinear(2)).train()
    x = torch.randn(8, 3, 6, 6)
    model(x)  # materialise the lazy layer
    reference = [b.clone() for b in model.buffers()]
    faults: list[int] = []
    faulty_first_conv(model, faults)
    fence = Bf16Fence(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fence.forward(model, x)
    assert faults == [1] and torch.isfinite(out).all() and fence.take_count() == 1
    # one fp32 pass from the saved statistics: what an fp32 forward alone leaves behind
    expected_mean = (1 - 0.1) * reference[0] + 0.1 * model[0](x).mean(dim=(0, 2, 3)).detach()
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert int(model[1].num_batches_tracked) == int(reference[2]) + 1
    assert fence.take_count() == 0

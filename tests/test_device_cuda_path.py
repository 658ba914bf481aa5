"""The CUDA path's defects, checked on the CPU: device names, checkpoints read onto the CPU,
fp32 classifier logits under bf16, sync-free evaluation, no host reads in the step loop, a
machine without mlflow or omegaconf, and ``precision=auto``."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import lt_bench.run.assemble as parts
import lt_bench.run.checkpoint as checkpoint
import lt_bench.run.loop as loop
import lt_bench.run.train as harness
from lt_bench import LtBenchError
from lt_bench.backbones import build_backbone
from lt_bench.backbones.heads import Fp32Linear
from lt_bench.config import load_config
from lt_bench.device.defaults import resolve_compile, resolve_precision
from lt_bench.run.evaluate import evaluate

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.lr=0.05", "protocol.warmup_epochs=0",
        "precision=fp32", "quiet=true", "deterministic=true", "tracking.tracker=local"]


# -- device names -----------------------------------------------------------------------------
def test_cuda_means_the_local_ranks_gpu(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    for name in ("cuda", "auto"):
        _, _, device = parts.setup_distributed(name)
        assert device == torch.device("cuda:1")
    assert chosen == [torch.device("cuda:1")] * 2
    _, _, device = parts.setup_distributed("cuda:0")  # an explicit index is kept
    assert device == torch.device("cuda:0")


def test_a_malformed_device_is_a_one_line_error():
    with pytest.raises(LtBenchError, match="'device' must be auto, cpu, cuda or cuda:N"):
        parts.setup_distributed("gpu0")


# -- resume reads the checkpoint onto the CPU ------------------------------------------------------
def test_resume_reads_the_checkpoint_onto_the_cpu(tmp_path, monkeypatch):
    """On a GPU, a checkpoint mapped to the training device puts the saved CPU RNG state there
    and set_rng_state rejects it. Here a read mapped anywhere but "cpu" gets its RNG state on
    'meta', which set_rng_state rejects the same way."""
    cfg = load_config([], TINY + ["protocol.epochs=2", "method=dv", "protocol.start_epoch=1",
                                  f"workspace={tmp_path}"])
    first = harness.train(cfg)
    next((tmp_path / "runs").glob("*/results.json")).unlink()  # as if killed after the save
    real_load = checkpoint.load_checkpoint

    def load_elsewhere(path, map_location=None):
        state = real_load(path, map_location=map_location)
        if map_location != "cpu":
            state["rng"] = state["rng"].to("meta")
        return state

    monkeypatch.setattr(checkpoint, "load_checkpoint", load_elsewhere)
    resumed = harness.train(cfg)
    assert resumed.final == first.final and resumed.status == "FINISHED"


# -- bf16: classifier in fp32 ----------------------------------------------------------------------
def test_fp32_classifier_breaks_a_bf16_tie_the_right_way():
    """Logits 1 and 1 + 2^-10 round to the same bf16 value, and argmax then picks class 0
    (the head class in CIFAR-LT); computed in fp32 the classifier picks class 1."""
    plain = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        plain.weight.copy_(torch.tensor([[1.0], [1.0 + 2.0 ** -10]]))
    fp32 = Fp32Linear(1, 2, bias=False)
    fp32.load_state_dict(plain.state_dict())
    x = torch.ones(1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(x).dtype == torch.bfloat16 and plain(x).argmax(1).item() == 0
        assert fp32(x).dtype == torch.float32 and fp32(x).argmax(1).item() == 1


def test_backbone_logits_are_fp32_under_autocast():
    model = build_backbone("resnet32", 10).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(2, 3, 32, 32)).dtype == torch.float32
    assert isinstance(build_backbone("resnet50", 7).fc, Fp32Linear)


# -- evaluation ---------------------------------------------------------------------------------
class FixedData:
    """Three batches of given targets, and a 'model' that returns given predictions."""

    classes = ["a", "b", "c"]
    train_counts = [300, 50, 5]

    def __init__(self, targets, predicted):
        self.targets, self.predicted = targets, predicted

    def test_batches(self, batch_size, *, device, rank, world_size, split):
        for i in range(0, len(self.targets), batch_size):
            yield torch.arange(i, min(i + batch_size, len(self.targets))), self.targets[i:i + batch_size]

    def model(self, index):
        return nn.functional.one_hot(self.predicted[index], 3).float()


def test_evaluation_counts_match_a_hand_count():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 3, (37,), generator=gen)
    predicted = torch.randint(0, 3, (37,), generator=gen)
    data = FixedData(targets, predicted)
    report = evaluate(data.model, data, "cpu", batch_size=10)
    expected = [[0] * 3 for _ in range(3)]
    for t, p in zip(targets.tolist(), predicted.tolist()):
        expected[t][p] += 1
    assert report["confusion"] == expected
    for c in range(3):
        n = sum(expected[c])
        assert report["per_class"][c] == pytest.approx(expected[c][c] / n)
    assert report["acc"] == pytest.approx(sum(expected[c][c] for c in range(3)) / 37)


# -- no host reads in the step loop ----------------------------------------------------------------
def count_host_reads(monkeypatch, tmp_path, batch_size: int) -> int:
    calls = []

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapper

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "nonzero"):
            m.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
        m.setattr(torch, "nonzero", counted("nonzero", torch.nonzero))
        cfg = load_config([], TINY + ["protocol.epochs=1", "method=dv", "log_every=100000",
                                      f"protocol.batch_size={batch_size}",
                                      f"workspace={tmp_path / str(batch_size)}"])
        harness.train(cfg)
    return len(calls)


def test_the_step_loop_never_reads_the_device(tmp_path, monkeypatch):
    """The same epoch in 6 and in 24 steps reads tensors on the host the same number of
    times: every read is per epoch (weights, loss, evaluation), none per step."""
    assert count_host_reads(monkeypatch, tmp_path, 64) == count_host_reads(monkeypatch,
                                                                            tmp_path, 16)


def test_checkpoints_keep_only_the_newest_and_best_confusion():
    history = [{"epoch": e, "test/acc": acc, "confusion": [[e]]}
               for e, acc in enumerate([0.2, 0.5, 0.4, 0.3])]
    for i in range(1, len(history) + 1):
        loop.drop_old_confusions(history[:i])
    assert [h["epoch"] for h in history if "confusion" in h] == [1, 3]


# -- a machine without mlflow or omegaconf -----------------------------------------------------------
def run_blocked(blocked: list[str], args: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "from lt_bench.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, "train", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_without_mlflow_the_local_tracker_trains(tmp_path):
    out = run_blocked(["mlflow"], TINY + ["protocol.epochs=1", f"workspace={tmp_path}"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.glob("runs/*/results.json"))


def test_without_mlflow_the_mlflow_tracker_fails_in_one_line_before_the_data(tmp_path):
    args = [a for a in TINY if not a.startswith("tracking")]
    out = run_blocked(["mlflow"], args + ["data.root=/nonexistent", "dataset=cifar10_lt",
                                          f"workspace={tmp_path}"])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.tracker=local" in lines[0], out.stderr


def test_without_omegaconf_the_cli_says_what_to_install(tmp_path):
    out = run_blocked(["omegaconf"], TINY + [f"workspace={tmp_path}"])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'omegaconf'" in lines[0], out.stderr


# -- precision=auto ----------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,expected", [
    ({"fma", "avx2"}, "fp32"), ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
    ({"amx_bf16", "amx_tile"}, "bf16"), (None, "fp32"),
])
def test_auto_precision_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr("lt_bench.device.defaults.cpu_flags", lambda: flags)
    chosen, why = resolve_precision("auto", torch.device("cpu"))
    assert chosen == expected and why


def test_explicit_bf16_on_an_emulating_cpu_warns_and_runs(monkeypatch, caplog):
    monkeypatch.setattr("lt_bench.device.defaults.cpu_flags", lambda: {"avx2"})
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        assert resolve_precision("bf16", torch.device("cpu"))[0] == "bf16"
    assert any("emulated and slow" in r.getMessage() for r in caplog.records)
    assert resolve_precision("fp32", torch.device("cpu"))[0] == "fp32"


@pytest.mark.parametrize("capability,expected", [((9, 0), "bf16"), ((7, 5), "fp32")])
def test_auto_precision_on_cuda_follows_the_compute_capability(monkeypatch, capability,
                                                                expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU")
    assert resolve_precision("auto", torch.device("cuda:0"))[0] == expected


def test_an_explicit_key_wins_over_a_group_given_after_it():
    cfg = load_config([], ["precision=fp32", "protocol.epochs=3", "protocol=paper_cifar"])
    assert cfg.precision == "fp32" and cfg.protocol.epochs == 3
    assert cfg.protocol.batch_size == 100  # the rest of the protocol still applies
    assert load_config([], ["protocol=quick"]).precision == "auto"


CUDA, CPU = torch.device("cuda:0"), torch.device("cpu")


@pytest.mark.parametrize("asked,mode,device,world,det,expected", [
    (None, None, CUDA, 1, False, "reduce-overhead"),  # the measured default on a GPU
    (None, None, CPU, 1, False, None),
    (None, None, CUDA, 2, False, None),  # CUDA graphs under DDP: not measured, so eager
    (None, None, CUDA, 1, True, None),  # deterministic runs stay on the checked eager path
    (None, "max-autotune", CUDA, 1, False, "max-autotune"),
    (True, None, CPU, 1, False, "default"),
    (True, None, CUDA, 4, True, "reduce-overhead"),  # asked for: always honoured
    (False, "reduce-overhead", CUDA, 1, False, None),
])
def test_compile_default_follows_the_device(asked, mode, device, world, det, expected):
    assert resolve_compile(asked, mode, device, world, det)[0] == expected


def fake_jobs(backbone: str, device: str = "auto", n: int = 3):
    from types import SimpleNamespace

    cfg = SimpleNamespace(device=device, backbone=SimpleNamespace(name=backbone))
    return [SimpleNamespace(cfg=cfg)] * n


@pytest.mark.parametrize("backbone,device,gpus,expected", [
    ("resnet32", "auto", 0, 1), ("resnet32", "auto", 1, 4), ("resnet32", "auto", 2, 8),
    ("resnet50", "auto", 2, 2), ("resnet32", "cpu", 1, 1),
])
def test_sweep_workers_default_to_the_measured_share_of_a_gpu(backbone, device, gpus, expected):
    from lt_bench.device.defaults import default_jobs

    assert default_jobs(fake_jobs(backbone, device), gpus) == expected


def test_workers_spread_over_the_gpus():
    from lt_bench.device.defaults import least_busy_gpu

    assert least_busy_gpu([], 1) is None  # one GPU: leave CUDA_VISIBLE_DEVICES alone
    in_use: list = []
    for _ in range(5):
        in_use.append(least_busy_gpu(in_use, 2))
    assert in_use == [0, 1, 0, 1, 0]
    assert least_busy_gpu([0, 0, 1], 3) == 2

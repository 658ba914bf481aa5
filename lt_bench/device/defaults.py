"""What a run uses by default on its device: the precision, whether to compile, and how many
sweep workers share a GPU.

``precision=auto``: bf16 autocast only where the device runs it natively. bf16 on a CPU without AVX512-BF16 or AMX is emulated: ResNet-32 trained 10× slower in bf16 than
in fp32 on an AVX2-only EPYC (issue 11). A GPU of compute capability ≥ 8.0 (Ampere and later)
has bf16 tensor cores. The decision reads the device's capabilities and never runs a probe, so it
is instant and the same on every rank.

``compile`` unset: torch.compile with CUDA graphs (``reduce-overhead``) for a one-process CUDA
run, measured 2.5x faster per epoch than eager for ResNet-32 on CIFAR-10-LT on an H100 (the
harness, DV statistics included: 0.89 s against 2.21 s, docs/BENCHMARKS.md), for about a minute
of compilation per process. Eager under DDP or with deterministic algorithms (CUDA graphs there
have not been measured). A CPU run measures its memory format and compilation instead
(``lt_bench.device.cpu_variant``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lt_bench.errors import LtBenchError

log = logging.getLogger(__name__)

CHOICES = ("auto", "fp32", "bf16")
#: /proc/cpuinfo flags of CPUs that compute bf16 natively (AVX512-BF16 dot products, AMX tiles)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and why (a short phrase for the log)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return True, f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
        return False, f"{name} (compute capability {major}.{minor}) has no bf16 tensor cores"
    if device.type == "cpu":
        flags = cpu_flags()
        if flags is None:
            return False, "this CPU's features cannot be read"
        found = [f for f in CPU_BF16_FLAGS if f in flags]
        if found:
            return True, f"this CPU has {' and '.join(found)}"
        return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"
    return False, f"bf16 support on {device.type} is not known"


def resolve_precision(asked: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses (fp32 | bf16) and the reason, from the config's choice."""
    if asked not in CHOICES:
        raise LtBenchError(f"config key 'precision' must be one of {', '.join(CHOICES)}, "
                           f"got {asked!r}")
    native, why = native_bf16(device)
    if asked == "auto":
        return ("bf16" if native else "fp32"), why
    if asked == "bf16" and not native:
        log.warning("precision=bf16 is emulated and slow here: %s; precision=auto picks fp32 "
                    "on this device", why)
        return "bf16", f"asked for; {why}"
    return asked, "asked for"


def resolve_compile(asked: bool | None, mode: str | None, device: torch.device, world_size: int,
                    deterministic: bool) -> tuple[str | None, str]:
    """torch.compile's mode for this run (None: eager) and the reason."""
    cuda = device.type == "cuda"
    default_mode = "reduce-overhead" if cuda else "default"
    if asked:
        return mode or default_mode, "asked for"
    if asked is False:
        return None, "asked for"
    if not cuda:
        return None, "eager on the CPU"
    if world_size > 1 or deterministic:
        return None, ("eager under DDP" if world_size > 1 else "eager with deterministic=true")
    return mode or default_mode, "one CUDA process: CUDA graphs were 2.5x faster on an H100"


#: workers per GPU for ResNet-32 runs: on an H100, 4 eager processes trained 3.5x the images of
#: one (8 gave 3.6x) and one alone kept the GPU busy 29 % of the time (docs/BENCHMARKS.md).
#: Other backbones were not measured, and a large one fills a GPU alone: one per GPU.
SMALL_MODEL_WORKERS_PER_GPU = 4


def cuda_devices() -> int:
    """GPUs visible to local workers (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs(jobs: list, gpus: int) -> int:
    """Workers when ``jobs=`` is not given: one on a CPU (a run uses every core), per GPU
    SMALL_MODEL_WORKERS_PER_GPU for ResNet-32 and one for anything larger."""
    if not gpus or any(str(j.cfg.device) == "cpu" for j in jobs):
        return 1
    small = all(j.cfg.backbone.name == "resnet32" for j in jobs)
    return gpus * (SMALL_MODEL_WORKERS_PER_GPU if small else 1)


def least_busy_gpu(in_use: list[int | None], gpus: int) -> int | None:
    """The GPU with the fewest running workers, or None with fewer than two GPUs."""
    if gpus < 2:
        return None
    return min(range(gpus), key=lambda g: in_use.count(g))

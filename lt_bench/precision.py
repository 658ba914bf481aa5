"""``precision=auto``: bf16 autocast only where the device runs it natively.

bf16 on a CPU without AVX512-BF16 or AMX is emulated: ResNet-32 trained 10× slower in bf16 than
in fp32 on an AVX2-only EPYC (issue 11). A GPU of compute capability ≥ 8.0 (Ampere and later)
has bf16 tensor cores. The decision reads the device's capabilities and never runs a probe, so it
is instant and the same on every rank.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from lt_bench.errors import LtBenchError

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
        warnings.warn(f"precision=bf16 is emulated and slow here: {why}; precision=auto picks "
                      "fp32 on this device", stacklevel=2)
        return "bf16", f"asked for; {why}"
    return asked, "asked for"

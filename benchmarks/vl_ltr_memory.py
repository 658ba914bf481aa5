"""Peak memory of the VL-LTR language-guided head, forward + backward, at iNaturalist size.

    python benchmarks/vl_ltr_memory.py                       # C=8142, D=1024, M=64, batch 32
    python benchmarks/vl_ltr_memory.py --batch 8 --obvious   # also the straightforward head

Measured on CPU as the rise of the process's peak resident set size (``VmHWM`` of
/proc/self/status, reset through /proc/self/clear_refs) over the resident size once the head and
its constant buffers (anchors, Gram matrices) exist, so the figure is what one training step
adds. On CUDA (``--device cuda``) ``torch.cuda.max_memory_allocated`` is used instead.

``--obvious`` also measures a straightforward implementation, which forms the keys
Wk·LN(t) [C, M, D] and the pooled anchors v [B, C, D] (but not [B, C, M, D]), for comparison.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from lt_bench.backbones.vl_ltr import LanguageGuidedHead

GIB = 1024**3


def read_status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS
    return read_status("VmRSS")


def peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return read_status("VmHWM")


def obvious_z2(head: LanguageGuidedHead, f: torch.Tensor) -> torch.Tensor:
    """The textbook computation: keys [C, M, D] and pooled anchors v [B, C, D]."""
    t, mask = head.anchors, head.anchor_mask
    q = head.w_q(head.ln_q(f))
    k = head.w_k(head.ln_k(t))                                            # [C, M, D]
    scores = torch.einsum("bd,cmd->bcm", q, k) / math.sqrt(t.shape[-1])
    a = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    v = torch.einsum("bcm,cmd->bcd", a, t)                                # [B, C, D]
    cos = torch.einsum("bd,bcd->bc", F.normalize(f, dim=-1), F.normalize(v, dim=-1))
    return head.logit_scale.exp() * cos


def measure(head, batch: int, dim: int, device, obvious: bool) -> tuple[int, float]:
    f = torch.randn(batch, dim, device=device, requires_grad=True)
    head.zero_grad(set_to_none=True)
    base = reset_peak(device)
    started = time.perf_counter()
    if obvious:
        z1, z2 = head.mlp(f), obvious_z2(head, f)
    else:
        z1, z2 = head(f)
    (z1.float().logsumexp(1).mean() + z2.logsumexp(1).mean()).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return peak(device) - base, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=8142)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--obvious", action="store_true",
                        help="also measure the straightforward head (forms [C,M,D] and [B,C,D])")
    args = parser.parse_args()
    device = torch.device(args.device)
    C, D, M, B = args.classes, args.dim, args.sentences, args.batch
    torch.manual_seed(0)

    anchors = F.normalize(torch.randn(C, M, D), dim=-1)
    head = LanguageGuidedHead(C, D, anchors, torch.full((C,), M)).to(device)
    del anchors
    head.refresh()  # the Gram matrices: built once, like the anchors
    buffers = sum(b.numel() * b.element_size() for b in head.buffers())
    params = sum(p.numel() * p.element_size() for p in head.parameters())

    f4 = 4  # bytes per float32
    print(f"VL-LTR head, C={C}, D={D}, M={M}, batch {B}, {device.type}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  constant buffers (anchors, mask, Gram, LN stats): {buffers / GIB:.2f} GiB; "
          f"parameters: {params / GIB:.3f} GiB")
    print(f"  avoided [B, C, D] tensor:    {B * C * D * f4 / GIB:8.2f} GiB")
    print(f"  avoided [B, C, M, D] tensor: {B * C * M * D * f4 / GIB:8.2f} GiB")
    print(f"  avoided keys [C, M, D]:      {C * M * D * f4 / GIB:8.2f} GiB")
    print(f"  one [B, C, M] activation:    {B * C * M * f4 / GIB:8.3f} GiB")
    measure(head, 2, D, device, obvious=False)  # warm-up (allocator, thread pools)
    extra, seconds = measure(head, B, D, device, obvious=False)
    print(f"  this head, forward+backward: peak +{extra / GIB:.2f} GiB ({seconds:.1f} s)")
    if args.obvious:
        extra, seconds = measure(head, B, D, device, obvious=True)
        print(f"  obvious head (keys + [B,C,D]): peak +{extra / GIB:.2f} GiB ({seconds:.1f} s)")


if __name__ == "__main__":
    main()

"""A bf16 forward pass that came out non-finite on a CPU is done again in fp32.

Why: on a 2-core Intel Xeon with AMX, about 1 run in 8 of a random-initialised ResNet-50 (the
VL-LTR protocols' tower) stopped at its first step with non-finite logits in bf16, never in fp32;
a forward hook caught a ``Conv2d`` returning 65,536 non-finite outputs of 65,536 from finite
bf16 inputs. That is a kernel defect, not the user's learning rate. One candidate is oneDNN's
AMX bf16 K-tail read, which pulled bytes from outside the operand (uxlfoundation/oneDNN#5717,
fixed upstream in July 2026; torch 2.14 ships oneDNN 3.12); but that defect needs a reduction
length K = C_in·kh·kw that is not a multiple of 32, and most of ResNet-50's convolutions have one
that is. Nothing is confirmed: no AMX CPU was at hand when this was written.
``experiments/bf16_nan_repro.py`` is the minimal reproduction, ready for an upstream report.

So a batch whose bf16 logits are not all finite is scored again with autocast off. If the fp32
logits are finite, the step goes on with them and the run counts it (``train/fp32_redone`` in
the epoch's metrics, a warning the first time); if they are not, the model itself diverged, and
the criterion says so as before. BatchNorm's running statistics are put back before the second
pass, so the faulty pass leaves no trace. On a CPU every operation has finished when it returns,
so the check costs one pass over the logits and no wait.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class Bf16Fence:
    """Wraps the training forward pass of one single-process CPU run in bf16."""

    def __init__(self, model: torch.nn.Module):
        self.buffers = list(model.buffers())  # BatchNorm's statistics and batch count
        self.redone = 0  # batches of the current epoch done again in fp32
        self.warned = False

    def forward(self, model, images: torch.Tensor, **kwargs):
        saved = [b.clone() for b in self.buffers]
        out = model(images, **kwargs)
        if all_finite(out):
            return out
        with torch.no_grad():
            for b, s in zip(self.buffers, saved):
                b.copy_(s)
        with torch.autocast("cpu", enabled=False):
            again = model(images, **kwargs)
        if not all_finite(again):
            return out  # fp32 fails too: a divergence, which the criterion reports
        if not self.warned:
            self.warned = True
            log.warning("bf16 gave non-finite logits for a batch whose fp32 logits are finite "
                        "(a CPU kernel defect, see lt_bench/device/bf16_fence.py): that batch ran in "
                        "fp32; precision=fp32 avoids bf16 altogether")
        self.redone += 1
        return again

    def take_count(self) -> int:
        """Batches redone since the last call (one epoch's)."""
        n, self.redone = self.redone, 0
        return n


def all_finite(out) -> bool:
    tensors = out if isinstance(out, tuple) else (out,)
    return all(bool(torch.isfinite(t).all()) for t in tensors if isinstance(t, torch.Tensor))

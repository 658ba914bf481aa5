"""One epoch of training and one of evaluation, as the training loop calls them.

Every method is trained the same way: the step only calls ``criterion(logits, targets, ...)``,
and the epoch ends with ``criterion.end_epoch()``, so a comparison between methods differs only
in the method. What a method declares it needs (``lt_bench.method``) is given in ``batch_loss``.
"""

from __future__ import annotations

import math

import torch

from lt_bench.data import TensorData
from lt_bench.errors import LtBenchError
from lt_bench.run.evaluate import evaluate
from lt_bench.run.lookahead import LookAhead

#: a mean training loss above this has diverged (cross-entropy of a uniform guess over 10^4
#: classes is 9.2; LDAM's scale 30 multiplies by at most 30)
DIVERGED = 1e6


def train_one_epoch(model, criterion, optimizer, scheduler, batches, *, epoch: int, autocast,
                    memory_format, log_every: int, on_step, meta=None, fence=None) -> float:
    """Train over ``batches``; return the mean loss. ``on_step(step, mean_loss | None)`` is told
    after every step (the mean only every ``log_every`` steps: reading it syncs the device).
    ``meta``: batches of the meta set, for a method that looks ahead this epoch. ``fence``: a
    ``bf16_fence.Bf16Fence`` that redoes a non-finite bf16 forward pass in fp32."""
    model.train()
    criterion.train()
    loss_sum = None
    step = -1
    for step, (images, targets) in enumerate(batches):
        images = images.contiguous(memory_format=memory_format)
        with autocast:
            lr = optimizer.param_groups[0]["lr"]
            loss = batch_loss(model, criterion, images, targets, meta, lr, fence)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        logged = (step + 1) % log_every == 0  # the only host sync in the step loop
        on_step(step, check_finite(loss_sum, epoch, step) / (step + 1) if logged else None)
    if loss_sum is None:
        raise LtBenchError(f"epoch {epoch + 1} had no training batch: the training set is "
                           "empty on this rank; check the data set or protocol.batch_size")
    mean_loss = check_finite(loss_sum, epoch, step) / (step + 1)
    criterion.end_epoch()
    return mean_loss


def batch_loss(model, criterion, images, targets, meta, lr: float,
               fence=None) -> torch.Tensor:
    """The criterion's loss of one batch, given what its method declared it needs."""
    features = weights = None
    forward = fence.forward if fence is not None else call
    if criterion.needs_features:
        outputs, features = forward(model, images, return_features=True)
    else:
        outputs = forward(model, images)
    if criterion.looks_ahead:
        weights = criterion.look_ahead(
            LookAhead(model, images, targets, criterion.loss_fn, meta, lr)).detach()
    # Multi-branch heads (VL-LTR) return a tuple: the weights apply to every branch, the
    # statistics come from the first.
    branches = outputs if isinstance(outputs, tuple) else (outputs,)
    return sum(criterion(z, targets, observe=i == 0, features=features, sample_weights=weights)
               for i, z in enumerate(branches))


def call(model, images, **kwargs):
    return model(images, **kwargs)


def evaluate_epoch(model, data, device, batch_size: int, rank: int, world_size: int,
                   autocast, memory_format=torch.contiguous_format,
                   thresholds: dict | None = None) -> tuple[dict, dict]:
    """``(metrics, test report)``: ``test/acc``, ``test/acc_few``, ``test/ece``,
    ``test/shifted_forward50`` … and ``val/*`` when the data hold a validation split; the report
    keeps the per-class accuracy and the confusion. ``thresholds``: the groups' (``eval.*``)."""
    model.eval()
    with autocast:
        test = evaluate(model, data, device, batch_size, rank, world_size,
                        memory_format=memory_format, thresholds=thresholds)
        val = (evaluate(model, data, device, batch_size, rank, world_size, "val", memory_format,
                        thresholds) if data.num_val else {})
    metrics = {f"{split}/{k}": v for split, report in (("test", test), ("val", val))
               for k, v in report.items() if isinstance(v, (int, float))}
    return metrics, test


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> float:
    value = loss_sum.item()
    if not math.isfinite(value) or value / (step + 1) > DIVERGED:
        raise LtBenchError(
            f"training diverged in epoch {epoch + 1} by step {step + 1}: the mean loss is "
            f"{value / (step + 1):.3g}; lower protocol.lr, use precision=fp32, or check the data"
        )
    return value


def default_eval_batch(data, batch_size: int) -> int:
    """Small images on the device are scored 1,000 at a time: fewer, fuller launches on a GPU."""
    return max(batch_size, 1000) if isinstance(data, TensorData) else batch_size


def drop_old_confusions(history: list[dict]) -> None:
    """Keep the confusion matrix of the newest and of the best evaluated epochs only, so a
    checkpoint's size does not grow with the epoch count (C² numbers an epoch)."""
    scored = [h for h in history if h.get("confusion") is not None]
    if len(scored) < 2:
        return
    key = "val/acc" if all("val/acc" in h for h in scored) else "test/acc"
    best = max(scored, key=lambda h: h[key])
    for h in scored[:-1]:
        if h is not best:
            h.pop("confusion")


def format_accuracy(score) -> str:
    """``acc 0.7012  many 0.8100  medium 0.5200  few n/a  ece 0.0412`` (n/a: the group has no
    class) of a test report (dict) or a ``results.Score``."""
    def get(key):
        return score.get(key) if isinstance(score, dict) else getattr(score, key, None)

    def pct(v):
        return "n/a" if v is None else f"{v:.4f}"

    line = "  ".join(f"{k} {pct(get(f'acc_{k}' if k != 'acc' else k))}"
                     for k in ("acc", "many", "medium", "few"))
    return line if get("ece") is None else f"{line}  ece {pct(get('ece'))}"

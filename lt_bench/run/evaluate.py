"""Evaluation on the test set: top-1 accuracy overall, per class and many / medium / few; the
expected calibration error overall and per group; and the accuracy the per-class accuracies give
under shifted test priors.

* **Groups** follow the training counts and the thresholds ``eval.many_above`` /
  ``eval.few_below`` (``lt_bench.data.groups``); a sample belongs to its true class's group.
* **ECE** (Guo et al., 2017): the top-1 confidence of each test sample falls in one of
  ``ECE_BINS`` equal-width bins, ``(0, 1/15], (1/15, 2/15], …``; ECE = Σ_b |B_b|/N ·
  |acc(B_b) − conf(B_b)|. Per group, the same over the group's samples only.
* **Shifted priors** (SADE's test-agnostic protocol, Zhang et al., 2022): a test set whose class
  frequencies follow prior p scores Σ_c p_c · acc_c. Classes ranked by training count, most
  frequent first (rank r = 0 … C−1): ``forward<ρ>`` has p_c ∝ ρ^(−r/(C−1)) (long-tailed like
  training, imbalance ρ), ``backward<ρ>`` the same with the ranks reversed, ``uniform`` 1/C (the
  mean per-class accuracy). Only classes with test images take part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from lt_bench.data.groups import GROUP_NAMES, groups
from lt_bench.workspace.record import MAX_CONFUSION_CLASSES, SHIFT_FACTORS

ECE_BINS = 15


@torch.no_grad()
def evaluate(model, data, device, batch_size: int, rank: int = 0, world_size: int = 1,
             split: str = "test", memory_format=torch.contiguous_format,
             thresholds: dict | None = None) -> dict:
    """Accuracy and calibration over the test (or held-out validation) set. Under
    torch.distributed each rank scores a disjoint shard (no padded duplicates) and the counts
    are summed over ranks. ``thresholds``: ``many_above`` / ``few_below`` of the groups."""
    num_classes = len(data.classes)
    group_of_class = groups(data.train_counts, **(thresholds or {}))
    with_confusion = num_classes <= MAX_CONFUSION_CLASSES
    # Counts accumulate on the device with index_add_ (bincount and boolean masks would each
    # wait for the GPU); the host reads them once, after the last batch.
    confusion = torch.zeros(num_classes * num_classes if with_confusion else 1,
                            dtype=torch.long, device=device)
    correct = torch.zeros(num_classes, dtype=torch.long, device=device)
    total = torch.zeros(num_classes, dtype=torch.long, device=device)
    group_index = torch.tensor([GROUP_NAMES.index(g) for g in group_of_class], device=device)
    # per (group, bin): samples, hits and the sum of confidences; float64 so that a sum over
    # millions of samples keeps its last digits
    calibration = torch.zeros(3, len(GROUP_NAMES) * ECE_BINS, dtype=torch.float64, device=device)
    for images, targets in data.test_batches(batch_size, device=device, rank=rank,
                                             world_size=world_size, split=split):
        logits = model(images.contiguous(memory_format=memory_format)).float()
        predicted = logits.argmax(dim=1)  # from the logits: softmax rounding could make ties
        hit = predicted == targets
        total.index_add_(0, targets, torch.ones_like(targets))
        correct.index_add_(0, targets, hit.long())
        if with_confusion:
            confusion.index_add_(0, targets * num_classes + predicted, torch.ones_like(targets))
        confidence = torch.exp(logits.max(dim=1).values - logits.logsumexp(dim=1))
        cell = group_index[targets] * ECE_BINS + confidence_bin(confidence)
        for row, values in enumerate((torch.ones_like(confidence), hit.float(), confidence)):
            calibration[row].index_add_(0, cell, values.double())
    if world_size > 1:
        for t in (correct, total, confusion, calibration):
            dist.all_reduce(t)
    report = accuracy_report(correct.cpu(), total.cpu(), group_of_class,
                             confusion.view(num_classes, num_classes).cpu().tolist()
                             if with_confusion else None)
    report.update(calibration_report(calibration.view(3, len(GROUP_NAMES), ECE_BINS).cpu()))
    present = (total > 0).cpu().tolist()
    report.update({f"shifted_{name}": value for name, value in shifted_accuracies(
        report["per_class"], data.train_counts, present).items()})
    return report


def confidence_bin(confidence: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """The bin of each confidence: ``(b/bins, (b+1)/bins]`` is bin b (a confidence is at
    least 1/C, never 0)."""
    return (confidence * bins).ceil().long().clamp(1, bins) - 1


def accuracy_report(correct: torch.Tensor, total: torch.Tensor, group_of_class: list[str],
                    confusion=None) -> dict:
    """Overall and per-group accuracy pool the group's test samples. A group without classes
    (CIFAR-10-LT at IF 100 has no few-shot class), or a class without test images, has accuracy
    None, not a misleading 0."""
    per_class = [c / t if t else None for c, t in zip(correct.tolist(), total.tolist())]
    report = {"acc": correct.sum().item() / max(1, total.sum().item()), "per_class": per_class}
    for name in GROUP_NAMES:
        mask = torch.tensor([g == name for g in group_of_class])
        n = total[mask].sum().item()
        report[f"acc_{name}"] = correct[mask].sum().item() / n if n else None
        report[f"classes_{name}"] = int(mask.sum())
    if confusion is not None:
        report["confusion"] = confusion
    return report


def calibration_report(cells: torch.Tensor) -> dict:
    """``ece`` and ``ece_<group>`` from ``cells[(count, hits, confidence sum), group, bin]``;
    None for a group without test samples. |B_b|/N · |acc − conf| is |hits_b − conf_b| / N."""
    def ece(count, hits, conf) -> float | None:
        n = count.sum().item()
        return (hits - conf).abs().sum().item() / n if n else None

    report = {"ece": ece(*cells.sum(dim=1))}
    for g, name in enumerate(GROUP_NAMES):
        report[f"ece_{name}"] = ece(*cells[:, g])
    return report


def expected_calibration_error(logits: torch.Tensor, targets: torch.Tensor,
                               bins: int = ECE_BINS) -> float:
    """ECE of one set of logits: the definition, for a caller with the logits in hand."""
    confidence = torch.exp(logits.max(dim=1).values - logits.logsumexp(dim=1)).double()
    hit = (logits.argmax(dim=1) == targets).double()
    b = confidence_bin(confidence, bins)
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, b, hit - confidence)
    return gap.abs().sum().item() / len(targets)


def shifted_priors(train_counts: Sequence[int],
                   factors: Sequence[float] = SHIFT_FACTORS) -> dict[str, list[float]]:
    """The test priors of the module docstring, ``{"forward50": [p_0, …], …, "uniform": …,
    "backward50": …}``, indexed like the classes."""
    c = len(train_counts)
    order = sorted(range(c), key=lambda i: (-int(train_counts[i]), i))  # stable on ties
    rank = [0] * c
    for r, i in enumerate(order):
        rank[i] = r

    def prior(weight) -> list[float]:
        w = [weight(rank[i]) for i in range(c)]
        return [v / sum(w) for v in w]

    span = max(c - 1, 1)
    out = {f"forward{f:g}": prior(lambda r, f=f: f ** (-r / span)) for f in factors}
    out["uniform"] = prior(lambda r: 1.0)
    out.update({f"backward{f:g}": prior(lambda r, f=f: f ** (-(span - r) / span))
                for f in reversed(factors)})
    return out


def shifted_accuracies(per_class: Sequence[float], train_counts: Sequence[int],
                       present: Sequence[bool] | None = None,
                       factors: Sequence[float] = SHIFT_FACTORS) -> dict[str, float]:
    """Σ_c p_c · acc_c for each prior of ``shifted_priors``, over the classes ``present`` in
    the test set (all by default); empty when none is."""
    keep = [i for i in range(len(per_class)) if present is None or present[i]]
    if not keep:
        return {}
    priors = shifted_priors([train_counts[i] for i in keep], factors)
    return {name: sum(p * float(per_class[i]) for p, i in zip(prior, keep))
            for name, prior in priors.items()}

"""Top-1 accuracy on the balanced test set: overall, per class, and many / medium / few."""

from __future__ import annotations

import torch
import torch.distributed as dist

from lt_bench.data import groups
from lt_bench.results import MAX_CONFUSION_CLASSES

GROUP_NAMES = ("many", "medium", "few")


@torch.no_grad()
def evaluate(model, data, device, batch_size: int, rank: int = 0, world_size: int = 1,
             split: str = "test", memory_format=torch.contiguous_format) -> dict:
    """Accuracy over the test (or held-out validation) set. Under torch.distributed each rank
    scores a disjoint shard (no padded duplicates) and the per-class counts are summed over
    ranks."""
    num_classes = len(data.classes)
    with_confusion = num_classes <= MAX_CONFUSION_CLASSES
    # Counts accumulate on the device with index_add_ (bincount and boolean masks would each
    # wait for the GPU); the host reads them once, after the last batch.
    confusion = torch.zeros(num_classes * num_classes if with_confusion else 1,
                            dtype=torch.long, device=device)
    correct = torch.zeros(num_classes, dtype=torch.long, device=device)
    total = torch.zeros(num_classes, dtype=torch.long, device=device)
    for images, targets in data.test_batches(batch_size, device=device, rank=rank,
                                             world_size=world_size, split=split):
        predicted = model(images.contiguous(memory_format=memory_format)).float().argmax(dim=1)
        total.index_add_(0, targets, torch.ones_like(targets))
        correct.index_add_(0, targets, (predicted == targets).long())
        if with_confusion:
            confusion.index_add_(0, targets * num_classes + predicted, torch.ones_like(targets))
    if world_size > 1:
        for t in (correct, total, confusion):
            dist.all_reduce(t)
    return accuracy_report(correct.cpu(), total.cpu(), groups(data.train_counts),
                           confusion.view(num_classes, num_classes).cpu().tolist()
                           if with_confusion else None)


def accuracy_report(correct: torch.Tensor, total: torch.Tensor, group_of_class: list[str],
                    confusion=None) -> dict:
    """Overall and per-group accuracy pool the group's test samples. A group without classes
    (CIFAR-10-LT at IF 100 has no few-shot class) has accuracy None, not a misleading 0."""
    per_class = (correct.double() / total.clamp_min(1).double()).tolist()
    report = {"acc": correct.sum().item() / max(1, total.sum().item()), "per_class": per_class}
    for name in GROUP_NAMES:
        mask = torch.tensor([g == name for g in group_of_class])
        n = total[mask].sum().item()
        report[f"acc_{name}"] = correct[mask].sum().item() / n if n else None
        report[f"classes_{name}"] = int(mask.sum())
    if confusion is not None:
        report["confusion"] = confusion
    return report

"""Class-volume weights (Zheng & Ng): α_i ∝ r_i / n_i with r_i the geometric mean spread of the
logits of class i's training samples over the last epoch, along the logit axes (``dv``), the
leading principal axes (``pv``) or the axes e_i − e_j (``bv``).

The statistics are gathered exactly and in one pass by ``lt_bench.volume.ClassMoments`` (see
there for the math, the floor on σ and the memory: dv 2·C², bv 3·C², pv C³ + 2·C² float64 numbers,
pv is refused above 2 GiB). They are buffers of the criterion, so ``state_dict()`` carries them.
Weights are uniform until the first statistics; with ``start_epoch`` they are uniform before it and
the first weights come from the epoch before it, whose logits alone are gathered.
"""

from __future__ import annotations

import logging

import torch

import lt_bench
from lt_bench.errors import LtBenchError
from lt_bench.volume import (
    SIGMA_FLOOR,
    ClassMoments,
    bv_variances,
    class_log_radii,
    class_volume_raw_weights,
    dv_variances,
    pv_variances,
)

log = logging.getLogger("lt_bench.plugins.class_volume")  # under lt_bench: the CLI shows it


class ClassVolume(lt_bench.Method):
    """Class-volume weighting, common part: statistics, substitution (S30), weights r/n."""

    default_normalization = "expected"
    #: which moments the axes need
    needs_cross = False
    needs_full = False

    def __init__(self, class_counts, *, substitute_below: int = 30, **options):
        if int(substitute_below) != substitute_below or substitute_below < 0:
            raise LtBenchError(
                f"substitute_below must be a whole number >= 0 (0 disables), got "
                f"{substitute_below!r}"
            )
        self.substitute_below = int(substitute_below)
        super().__init__(class_counts, **options)
        self.stats = ClassMoments(self.num_classes, cross=self.needs_cross, full=self.needs_full)

    # -- the axes ------------------------------------------------------------------------------
    def axis_variances(self, rows: slice = slice(None)) -> torch.Tensor:
        """[C, D] float64 variances of each class along its D axes (the classes in ``rows``)."""
        raise NotImplementedError

    # -- Method hooks --------------------------------------------------------------------------
    def wants_statistics(self) -> bool:
        # this epoch's statistics make the weights of the next one, used from start_epoch on
        return self.epoch + 1 >= self.start_epoch

    def observe(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.stats.update(logits, targets)

    def reset_statistics(self) -> None:
        self.stats.reset()

    def sync_statistics(self) -> None:
        if not self.wants_statistics():
            return  # nothing was gathered this epoch (nor on any other rank)
        self.stats.all_reduce()
        self._check_finite()

    def _check_finite(self) -> None:
        if not self.stats.is_finite():
            self.stats.reset()
            raise LtBenchError(
                "the model produced non-finite logits (NaN or inf) during the epoch, so the "
                "class-volume statistics are not finite: lower the learning rate, use fp32 "
                "precision, or check the input data"
            )

    def raw_weights(self) -> torch.Tensor | None:
        stats = self.stats
        self._check_finite()
        valid = stats.valid()
        if not bool(valid.any()):
            return None
        log_r = class_log_radii(self.axis_variances, self.num_classes, valid,
                                on_flat=self._note_flat)
        return class_volume_raw_weights(log_r, valid, self.class_counts, self.substitute_below)

    def _note_flat(self, classes: list[int], none_varies: bool) -> None:
        if classes == getattr(self, "_flat_told", None):
            return  # said once, not every epoch
        self._flat_told = classes
        effect = ("no class varies, so there is no spread to compare: the weights stay as they "
                  "were" if none_varies else f"their σ is floored at {SIGMA_FLOOR:g} × the "
                  "largest, which gives them the smallest radius")
        log.warning(
            "class volume: %d class(es) (indices %s) had identical logits for all their samples "
            "this epoch (zero spread); %s. A condition of the data (duplicated images) or the "
            "model (a class mapped to one point), not an error", len(classes), classes[:10],
            effect)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, substitute_below={self.substitute_below}"


class DiagonalVolume(ClassVolume):
    """Class volume along the C logit axes (DV): α ∝ (∏_k σ_k)^(1/C) / n, normalised Σ n α = Σ n."""

    def axis_variances(self, rows=slice(None)):
        return dv_variances(self.stats, rows)


class BinaryVolume(ClassVolume):
    """Class volume along the C−1 axes e_i − e_j (BV): σ_ij² = Var_i(x_i − x_j), α ∝ r / n."""

    needs_cross = True

    def axis_variances(self, rows=slice(None)):
        return bv_variances(self.stats, rows)


class PrincipalVolume(ClassVolume):
    """Class volume along the leading principal axes (PV): σ_k² = λ_k, α ∝ r / n.

    Keeps a full covariance matrix per class: C³ float64 numbers (C = 100: 8 MB); refused above
    2 GiB (C > 645), where dv or bv apply. ``components`` is D†, the number of principal axes
    (None: all C; more than C means all C).
    """

    needs_full = True

    def __init__(self, class_counts, *, components: int | None = 10, **options):
        if components is not None and (int(components) != components or components < 1):
            raise LtBenchError(f"pv: components must be a whole number >= 1 or None, "
                               f"got {components!r}")
        self.components = None if components is None else int(components)
        super().__init__(class_counts, **options)

    def axis_variances(self, rows=slice(None)):
        return pv_variances(self.stats, self.components, rows)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, components={self.components}"


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("dv", DiagonalVolume)
    register("pv", PrincipalVolume)
    register("bv", BinaryVolume)

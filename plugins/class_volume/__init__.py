"""Class-volume weights (Zheng & Ng): α_i ∝ r_i / n_i with r_i the geometric mean spread of the
logits of class i's training samples over the last epoch, along the logit axes (``dv``), the
leading principal axes (``pv``) or the axes e_i − e_j (``bv``).

The statistics are gathered exactly and in one pass by ``lt_bench_plugins.class_volume.volume.ClassMoments`` (see
there for the math, the floor on σ and the memory: dv 2·C², bv 3·C², pv C³ + 2·C² float64 numbers,
pv is refused above 2 GiB). They are buffers of the criterion, so ``state_dict()`` carries them.
Weights are uniform until the first statistics; with ``start_epoch`` they are uniform before it and
the first weights come from the epoch before it, whose logits alone are gathered.

``convention`` picks between the paper's text (``paper``, the default) and the authors' public CIFAR
code, which produced the paper's Table 1 (``authors``): σ with the divisor n for DV and BV; for PV
the radius is the geometric mean of the top-D† eigenvalues of the class covariance (ddof 1, PCA's
explained variances) themselves, not of their square roots, taken as the code takes them (see
``authors_components``: a class of n ≤ D† samples collapses there, and here too); substitution of
classes with n ≤ ``substitute_below`` training samples, off unless asked for (the code's
``min_dv_sample``, default 0).
"""

from __future__ import annotations

import logging

import torch
from lt_bench_plugins.class_volume.volume import (
    SIGMA_FLOOR,
    ClassMoments,
    bv_variances,
    class_log_radii,
    class_volume_raw_weights,
    dv_variances,
    pv_variances,
)

import lt_bench
from lt_bench.errors import LtBenchError, closest

log = logging.getLogger("lt_bench.plugins.class_volume")  # under lt_bench: the CLI shows it

CONVENTIONS = ("paper", "authors")
#: substitute_below when it is not given: the paper's S30; off in the authors' code, whose Table 1
#: DV row was run without it
DEFAULT_SUBSTITUTE_BELOW = {"paper": 30, "authors": 0}


class PerConvention:
    """An option default that depends on ``convention``, as ``lt-bench methods`` shows it."""

    def __init__(self, by_convention: dict):
        self.by_convention = dict(by_convention)

    def __repr__(self) -> str:
        return "None (" + ", ".join(f"{k}: {v}" for k, v in self.by_convention.items()) + ")"


class ClassVolume(lt_bench.Method):
    """Class-volume weighting, common part: statistics, substitution (S30), weights r/n."""

    default_normalization = "expected"
    #: which moments the axes need
    needs_cross = False
    needs_full = False

    def __init__(self, class_counts, *, convention: str = "paper",
                 substitute_below: int | None = None, **options):
        if convention not in CONVENTIONS:
            raise LtBenchError(
                f"method option convention={convention!r} is not valid"
                f"{closest(str(convention), CONVENTIONS)}: choose paper (the paper's text) or "
                f"authors (the authors' CIFAR code)"
            )
        self.convention = convention
        if substitute_below is None:
            substitute_below = DEFAULT_SUBSTITUTE_BELOW[convention]
        if int(substitute_below) != substitute_below or substitute_below < 0:
            raise LtBenchError(
                f"substitute_below must be a whole number >= 0 (0 disables), got "
                f"{substitute_below!r}"
            )
        self.substitute_below = int(substitute_below)
        super().__init__(class_counts, **options)
        self.stats = ClassMoments(self.num_classes, cross=self.needs_cross, full=self.needs_full)

    @property
    def ddof(self) -> int:
        """The σ divisor is n − ddof: n − 1 in the paper's text, n (np.std) in the authors' code."""
        return 1 if self.convention == "paper" else 0

    @classmethod
    def options(cls) -> dict[str, object]:
        found = super().options()
        found["substitute_below"] = PerConvention(DEFAULT_SUBSTITUTE_BELOW)
        return found

    # -- the axes ------------------------------------------------------------------------------
    #: σ below this fraction of the largest σ counts as this much (lt_bench_plugins.class_volume.volume)
    radius_floor = SIGMA_FLOOR

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
                                floor=self.radius_floor, on_flat=self._note_flat)
        below = self.substitute_below
        if self.convention == "authors":
            # the code keeps its own radius only when n > min_dv_sample, i.e. substitutes
            # n ≤ k; training counts are whole numbers, so that is n < k + 1
            below += 1
        return class_volume_raw_weights(log_r, valid, self.class_counts, below)

    def _note_flat(self, classes: list[int], none_varies: bool) -> None:
        if classes == getattr(self, "_flat_told", None):
            return  # said once, not every epoch
        self._flat_told = classes
        effect = ("no class varies, so there is no spread to compare: the weights stay as they "
                  "were" if none_varies else f"their σ is floored at {self.radius_floor:g} × the "
                  "largest, which gives them the smallest radius")
        log.warning(
            "class volume: %d class(es) (indices %s) had identical logits for all their samples "
            "this epoch (zero spread); %s. A condition of the data (duplicated images) or the "
            "model (a class mapped to one point), not an error", len(classes), classes[:10],
            effect)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, convention={self.convention}, "
                f"substitute_below={self.substitute_below}")


class DiagonalVolume(ClassVolume):
    """Class volume along the C logit axes (DV): α ∝ (∏_k σ_k)^(1/C) / n, normalised Σ n α = Σ n."""

    def axis_variances(self, rows=slice(None)):
        return dv_variances(self.stats, rows, self.ddof)


class BinaryVolume(ClassVolume):
    """Class volume along the C−1 axes e_i − e_j (BV): σ_ij² = Var_i(x_i − x_j), α ∝ r / n."""

    needs_cross = True

    def axis_variances(self, rows=slice(None)):
        return bv_variances(self.stats, rows, self.ddof)


class PrincipalVolume(ClassVolume):
    """Class volume along the leading principal axes (PV): σ_k² = λ_k (paper), σ_k = λ_k (authors).

    Keeps a full covariance matrix per class: C³ float64 numbers (C = 100: 8 MB); refused above
    2 GiB (C > 645), where dv or bv apply. ``components`` is D†, the number of principal axes
    (None: all C; more than C means all C). λ_k has ddof 1 in both conventions.
    """

    needs_full = True

    def __init__(self, class_counts, *, components: int | None = 10, **options):
        if components is not None and (int(components) != components or components < 1):
            raise LtBenchError(f"pv: components must be a whole number >= 1 or None, "
                               f"got {components!r}")
        self.components = None if components is None else int(components)
        super().__init__(class_counts, **options)
        self._spanned = torch.full((self.num_classes,), self.axes)

    @property
    def radius_floor(self) -> float:
        # below ROUND_OFF, so that the floor never lifts the collapse the authors' code has
        return AUTHORS_PV_FLOOR if self.convention == "authors" else SIGMA_FLOOR

    def axis_variances(self, rows=slice(None)):
        if self.convention == "paper":
            return pv_variances(self.stats, self.components, rows)
        eig = pv_variances(self.stats, None, rows)  # all of them, for the fill-in
        self._note_span(eig, rows)
        axes = authors_components(eig, self.stats.count[rows], self.components)
        # The authors' radius is the geometric mean of the eigenvalues (variances) themselves;
        # class_log_radii averages log √v, so v = λ² makes it average log λ (and floors λ).
        return axes.square()

    @property
    def axes(self) -> int:
        return self.num_classes if self.components is None else min(self.components,
                                                                     self.num_classes)

    def raw_weights(self) -> torch.Tensor | None:
        if self.convention != "authors":
            return super().raw_weights()
        self._spanned = torch.full((self.num_classes,), self.axes)
        weights = super().raw_weights()  # fills _spanned through axis_variances
        self._note_collapsed()
        return weights

    def _note_span(self, eig: torch.Tensor, rows: slice) -> None:
        """Keep how many of the D† axes each class's logits span (its eigenvalues above FLAT)."""
        # A head on F < D† features puts every class's logits in an F-dimensional subspace
        # (ResNet-32 on CIFAR-100: 64 of 100), so the classes of more samples are flat along
        # D† − F axes as well, and round-off enters their radius the same way, by a larger share.
        spanned = (eig[:, :self.axes] > FLAT * eig[:, :1]).sum(dim=1).cpu()
        first = rows.indices(self.num_classes)[0]
        self._spanned[first:first + len(spanned)] = spanned

    def _note_collapsed(self) -> None:
        d, spanned = self.axes, self._spanned
        counts = self.stats.count.cpu()
        collapsed = ((counts > 0) & (counts <= d)).nonzero().flatten().tolist()
        flat = ((counts > d) & (spanned < d)).nonzero().flatten().tolist()
        if not (collapsed or flat) or (collapsed, flat) == getattr(self, "_collapse_told", None):
            return  # said once, not every epoch
        self._collapse_told = (collapsed, flat)
        if collapsed:
            log.warning(
                "pv (authors): class(es) %s have n <= D† = %d samples (n = %s), so their volume "
                "collapses by a root of round-off, and so does their weight, as in the authors' "
                "code (sklearn's PCA keeps min(n, C) components, the last of them zero); "
                "method.convention=paper or fewer components avoids it", collapsed[:10], d,
                [int(counts[k]) for k in collapsed[:10]])
        if flat:
            log.warning(
                "pv (authors): %d class(es) of more than D† = %d samples (%s) have logits that "
                "span only %d of the %d axes (a head on fewer features than D†), so round-off "
                "enters their radius too, as in the authors' code, and their weights fall far "
                "below the other classes'; components at most the feature width avoid it",
                len(flat), d, flat[:10], int(spanned[flat].max()), d)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, components={self.components}"


#: the eigenvalue the authors' code finds along a direction its n samples do not span: float32
#: round-off in sklearn's PCA, its median 2e-16 to 6e-14 of the class's largest eigenvalue by n
#: and C, about 1e-14 for 100 classes of 3 to 5 samples (sklearn 1.9.1, experiments/pv_authors.py);
#: taken as this fraction of it. The code's weights of such classes vary with it by its n-th root.
ROUND_OFF = 1e-14
#: an eigenvalue at most this fraction of the class's largest is a direction its logits do not
#: span: far above float64 round-off (1e-16) and float32 PCA's (ROUND_OFF); on CIFAR-100 the
#: unspanned axes of ResNet-32's logits sat at the ROUND_OFF floor (docs/RESULTS.md)
FLAT = 1e-9
#: the relative floor on λ for the authors' PV, far below ROUND_OFF
AUTHORS_PV_FLOOR = 1e-18


def authors_components(eig: torch.Tensor, counts: torch.Tensor,
                       components: int | None) -> torch.Tensor:
    """[R, D†] the axes of the authors' PV from ``eig`` ([R, C] eigenvalues, largest first).

    The code fits sklearn's ``PCA()`` to a class's logits, which keeps min(n, C) components;
    n samples span at most n − 1 directions, so for n ≤ C the last kept one is round-off
    (``ROUND_OFF`` × the class's largest here; no eigenvalue is taken smaller). A class with
    fewer than D† kept components has the missing ones replaced by the geometric mean of those
    it kept, round-off included: a class of n ≤ D† samples gets a volume near zero, and the
    smallest weight, where the paper's reading would give it the largest."""
    c = eig.shape[1]
    d = c if components is None else min(components, c)
    index = torch.arange(c, device=eig.device)
    counts = counts.to(eig.device)[:, None]
    tiny = ROUND_OFF * eig[:, :1]
    eig = torch.where(index < counts - 1, eig.clamp_min(tiny), tiny)
    kept = index < counts.clamp(max=c)
    have = kept.sum(dim=1, keepdim=True)
    log_eig = torch.where(kept, eig.clamp_min(torch.finfo(eig.dtype).tiny).log(),
                          torch.zeros_like(eig))
    fill = (log_eig.sum(dim=1, keepdim=True) / have.clamp_min(1)).exp()
    return torch.where(index[:d] < have, eig[:, :d], fill)


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("dv", DiagonalVolume)
    register("pv", PrincipalVolume)
    register("bv", BinaryVolume)

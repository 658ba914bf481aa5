"""Exact streaming per-class logit statistics and the class-volume radii built from them.

Zheng & Ng, "Class-Balanced Loss Based on Class Volume for Long-Tailed Object Recognition": the
weight of class i is r_i / n_i, where n_i is its training count and r_i = (∏_k σ_i,k)^(1/D) is the
geometric mean of the standard deviations (ddof=1 in the paper's text; the authors' code divides
by n, ``ddof=0``) of the class's logits along D axes:

* DV, the C logit axes: σ_i,k² = Var_i(x_k);
* PV, the D† leading principal axes of class i's logit covariance: σ_i,k² = λ_k;
* BV, the C−1 axes e_i − e_j: σ_ij² = Var_i(x_i − x_j) = V_ii + V_jj − 2·Cov_i(x_i, x_j).

The statistics (:class:`ClassMoments`) are gathered in one pass, exactly, in float64, without
keeping the logits: per class the count, the mean vector, the diagonal M2 (sums of squared
deviations) and, as needed, the cross term with the class's own logit (BV) or the full M2 matrix
(PV). A batch is reduced with a two-pass computation (its own mean first) and merged with Chan
et al.'s parallel update, touching only the rows of the classes in the batch.

Memory, float64: DV 2·C² (C = 8,142: 1.06 GB), BV 3·C², PV C³ + 2·C² (C = 100: 8 MB,
C = 645: 2 GiB, the limit :class:`ClassMoments` accepts, see :data:`MAX_FULL_BYTES`).

The floor on σ (:data:`SIGMA_FLOOR`): an axis along which a class does not vary (σ = 0) would
make log r = −inf. Every σ is therefore floored at ``SIGMA_FLOOR × the largest σ of any class``
(on the same kind of axes; at least the smallest normal float64). Being relative, the floor keeps
the weights invariant to a rescaling of the logits. 1e-6 lies above the round-off of the
computation (a zero eigenvalue from ``eigvalsh`` comes out as ≈ ε·C·λ_max, i.e. σ ≈
sqrt(C·2.2e-16)·σ_max ≤ 4e-7·σ_max for every C that PV accepts; the cancellation in
V_ii + V_jj − 2·Cov for BV leaves ≈ 1e-8·σ_max), so a degenerate axis is floored the same
way whatever its rounding noise, and at about the float32 resolution of the logits the
statistics come from, so it never touches a real spread. A floored axis lowers log r by at most
log(1e6)/D.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lt_bench.errors import LtBenchError

#: σ is floored at SIGMA_FLOOR × the largest σ of all classes (see the module docstring)
SIGMA_FLOOR = 1e-6
#: the largest full per-class covariance state (PV) that ClassMoments allocates, in bytes
MAX_FULL_BYTES = 2 * 1024**3
#: while the whole state holds at most this many elements per moment (DV/BV: C ≤ 1024; PV:
#: C ≤ 101), a batch updates every class's row: fixed shapes, no host sync. Above it, only the
#: rows of the classes present (torch.unique, which syncs on a GPU).
_DENSE_MAX_ELEMENTS = 2**20
#: how many float64 elements one chunk of per-sample outer products (PV) may hold
_OUTER_CHUNK_ELEMENTS = 2**24

__all__ = ["MAX_FULL_BYTES", "SIGMA_FLOOR", "ClassMoments", "bv_variances", "class_log_radii",
           "class_volume_raw_weights", "dv_variances", "log_radii", "pv_variances"]


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class ClassMoments(nn.Module):
    """Per-class streaming moments of the logits, exact in one pass (float64 buffers).

    Buffers (all float64, registered so that ``state_dict()`` carries them):

    * ``count`` [C]: samples of class c seen;
    * ``mean`` [C, C]: row c is the mean logit vector of class c's samples;
    * ``m2`` [C, C]: ``m2[c, k] = Σ (x_k − m_c,k)²`` over class c's samples;
    * ``cross`` [C, C] (``cross=True``, BV): ``cross[c, k] = Σ (x_c − m_c,c)(x_k − m_c,k)``;
    * ``full`` [C, C, C] (``full=True``, PV): ``full[c] = Σ (x − m_c)(x − m_c)ᵀ``.

    Memory: 8·C²·(2 + cross) bytes, plus 8·C³ with ``full`` (limited to :data:`MAX_FULL_BYTES`).
    The buffers follow the device of the logits given to :meth:`update`.
    """

    def __init__(self, num_classes: int, *, cross: bool = False, full: bool = False):
        super().__init__()
        num_classes = int(num_classes)
        if num_classes < 1:
            raise LtBenchError(f"ClassMoments needs at least one class, got {num_classes}")
        if full and 8 * num_classes**3 > MAX_FULL_BYTES:
            raise LtBenchError(
                f"pv keeps a full covariance matrix per class: {num_classes} classes need "
                f"{_format_bytes(8 * num_classes**3)} (8·C³ bytes), more than the "
                f"{_format_bytes(MAX_FULL_BYTES)} allowed; use dv or bv, whose statistics "
                f"need O(C²) memory"
            )
        self.num_classes = num_classes
        self.has_cross = bool(cross)
        self.has_full = bool(full)
        c = num_classes
        self.register_buffer("count", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(c, c, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(c, c, dtype=torch.float64))
        if self.has_cross:
            self.register_buffer("cross", torch.zeros(c, c, dtype=torch.float64))
        if self.has_full:
            self.register_buffer("full", torch.zeros(c, c, c, dtype=torch.float64))
        #: True after all_reduce() until the next update/merge/reset (a second one is a no-op)
        self.synced = False

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, cross={self.has_cross}, full={self.has_full}"

    @property
    def device(self) -> torch.device:
        return self.count.device

    def _moment_names(self) -> list[str]:
        names = ["m2"]
        if self.has_cross:
            names.append("cross")
        if self.has_full:
            names.append("full")
        return names

    # -- gathering -----------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self) -> None:
        """Forget every sample."""
        self.count.zero_()
        self.mean.zero_()
        for name in self._moment_names():
            getattr(self, name).zero_()
        self.synced = False

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``logits`` [B, C] (any float dtype), ``targets`` [B] class indices."""
        c = self.num_classes
        if logits.dim() != 2 or logits.shape[1] != c:
            raise LtBenchError(f"logits must have shape [batch, {c}], got {tuple(logits.shape)}")
        targets = targets.reshape(-1)
        if targets.numel() != logits.shape[0]:
            raise LtBenchError(
                f"{logits.shape[0]} logits but {targets.numel()} targets in the batch"
            )
        if logits.shape[0] == 0:
            return
        if logits.device != self.device:
            self.to(logits.device)
        x = logits.detach().to(torch.float64, copy=True)  # updated in place below
        targets = targets.detach().to(device=x.device, dtype=torch.long)
        if x.device.type == "cpu":  # on an accelerator this check would sync every step
            low, high = int(targets.min()), int(targets.max())
            if low < 0 or high >= c:
                raise LtBenchError(f"targets must be class indices in [0, {c}), got {low}..{high}")
        if c * c * (c if self.has_full else 1) <= _DENSE_MAX_ELEMENTS:
            # Every row, fixed shapes: no host sync per step. A class absent from the batch
            # merges as an empty batch (n_b = 0), which leaves its row unchanged.
            present, inv = torch.arange(c, device=x.device), targets
        else:  # iNaturalist-sized C: touch only the classes in the batch, O(B·C), not O(C²)
            present, inv = torch.unique(targets, return_inverse=True)
        p = present.numel()
        n_b = torch.zeros(p, dtype=torch.float64, device=x.device).index_add_(
            0, inv, torch.ones_like(inv, dtype=torch.float64))
        mean_b = torch.zeros(p, c, dtype=torch.float64, device=x.device).index_add_(0, inv, x)
        mean_b /= n_b.clamp_min(1.0)[:, None]
        dev = x.sub_(mean_b[inv])  # two-pass: deviations from the batch's own class means
        moments = {}
        if self.has_cross:
            own = dev.gather(1, targets[:, None])
            moments["cross"] = torch.zeros(p, c, dtype=torch.float64, device=x.device) \
                .index_add_(0, inv, dev * own)
        if self.has_full:
            full_b = torch.zeros(p, c, c, dtype=torch.float64, device=x.device)
            step = max(1, _OUTER_CHUNK_ELEMENTS // (c * c))
            for start in range(0, dev.shape[0], step):
                d = dev[start:start + step]
                full_b.index_add_(0, inv[start:start + step], d[:, :, None] * d[:, None, :])
            moments["full"] = full_b
        moments["m2"] = torch.zeros(p, c, dtype=torch.float64, device=x.device) \
            .index_add_(0, inv, dev.square_())  # dev is spent
        self._merge_rows(present, n_b, mean_b, moments)

    @torch.no_grad()
    def _merge_rows(self, rows: torch.Tensor, n_b: torch.Tensor, mean_b: torch.Tensor,
                    moments_b: dict[str, torch.Tensor]) -> None:
        """Chan et al.'s parallel merge of (n_b, mean_b, moments_b) into the given rows."""
        # In place where it can be: at iNaturalist size every [rows, C] temporary is a pass
        # over memory (benchmarks/volume_stats.py). moments_b is the caller's to overwrite.
        n_a = self.count[rows]
        n = n_a + n_b
        safe_n = torch.where(n > 0, n, torch.ones_like(n))
        mean = self.mean.index_select(0, rows)
        delta = mean_b.sub_(mean)  # mean_b is not needed any more
        mean.addcmul_(delta, (n_b / safe_n)[:, None])
        self.mean.index_copy_(0, rows, mean)
        w = (n_a * n_b / safe_n)[:, None]  # 0 when either side is empty
        dw = delta.mul_(w.sqrt())  # √w·δ: every cross term below is a product of two of them
        m2 = moments_b["m2"].add_(self.m2.index_select(0, rows))
        self.m2.index_copy_(0, rows, m2.addcmul_(dw, dw))
        if self.has_cross:
            own = dw.gather(1, rows[:, None])  # √w·δ of each class's own logit
            cross = moments_b["cross"].add_(self.cross.index_select(0, rows))
            self.cross.index_copy_(0, rows, cross.addcmul_(dw, own))
        if self.has_full:
            self.full[rows] = self.full[rows] + moments_b["full"] \
                + dw[:, :, None] * dw[:, None, :]
        self.count[rows] = n
        self.synced = False

    @torch.no_grad()
    def merge(self, other: ClassMoments) -> None:
        """Add the samples of another accumulator (same classes and moments) exactly."""
        if (other.num_classes, other.has_cross, other.has_full) != \
                (self.num_classes, self.has_cross, self.has_full):
            raise LtBenchError(f"cannot merge ClassMoments({other.extra_repr()}) into "
                               f"ClassMoments({self.extra_repr()})")
        rows = (other.count > 0).nonzero().flatten().to(self.device)
        if rows.numel() == 0:
            return
        src = rows.to(other.device)
        self._merge_rows(rows, other.count[src].to(self.device), other.mean[src].to(self.device),
                         {name: getattr(other, name)[src].to(self.device)
                          for name in self._moment_names()})

    @torch.no_grad()
    def all_reduce(self, group=None) -> None:
        """Replace every rank's statistics by those of all ranks together (torch.distributed).

        Only SUM all-reduces, so every rank ends with identical statistics: first n and n·mean
        (giving the global mean m), then M2_r + n_r (m_r − m)(m_r − m)ᵀ for each moment. A no-op
        when torch.distributed is not initialised, and after a previous all_reduce() with no
        update in between (so a second call does not count the samples twice).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or self.synced:
            return
        names = self._moment_names()
        c = self.num_classes
        first = torch.cat([self.count[:, None], self.mean * self.count[:, None]], dim=1)
        dist.all_reduce(first, op=dist.ReduceOp.SUM, group=group)
        n_g = first[:, 0]
        mean_g = first[:, 1:] / torch.where(n_g > 0, n_g, torch.ones_like(n_g))[:, None]
        delta = self.mean - mean_g
        delta = torch.where(self.count[:, None] > 0, delta, torch.zeros_like(delta))
        n_r = self.count
        parts = [self.m2 + n_r[:, None] * delta * delta]
        if self.has_cross:
            own = delta.diagonal()[:, None]
            parts.append(self.cross + n_r[:, None] * own * delta)
        if self.has_full:
            parts.append((self.full + n_r[:, None, None] * delta[:, :, None] * delta[:, None, :])
                         .reshape(c, c * c))
        second = torch.cat(parts, dim=1)
        dist.all_reduce(second, op=dist.ReduceOp.SUM, group=group)
        self.count.copy_(n_g)
        self.mean.copy_(mean_g)
        sizes = [c * c if name == "full" else c for name in names]
        for name, part in zip(names, second.split(sizes, dim=1)):
            getattr(self, name).copy_(part.reshape(getattr(self, name).shape))
        self.synced = True

    # -- reading -------------------------------------------------------------------------------
    def is_finite(self) -> bool:
        """Whether every statistic is finite (False once a NaN or inf logit was seen)."""
        # by blocks of rows: isfinite over a whole [C, C] float64 state makes float64
        # temporaries of its size (0.6 GB more at iNaturalist size)
        return all(bool(torch.isfinite(block).all())
                   for name in ["mean", *self._moment_names()]
                   for block in getattr(self, name).split(256))

    def valid(self) -> torch.Tensor:
        """[C] bool: classes with at least two samples, hence a variance."""
        return self.count >= 2


def _denominator(moments: ClassMoments, ddof: int = 1) -> torch.Tensor:
    """n − ddof per class (1 where n < 2, whose variances are not used): the moments are sums of
    squared deviations, so either divisor comes from the same single pass."""
    if ddof not in (0, 1):
        raise LtBenchError(f"ddof must be 0 (divide by n) or 1 (by n − 1), got {ddof!r}")
    n = moments.count
    return torch.where(n >= 2, n - ddof, torch.ones_like(n))


def dv_variances(moments: ClassMoments, rows: slice = slice(None), ddof: int = 1) -> torch.Tensor:
    """[C, C] float64: variance (divisor n − ddof) of logit k over class c's samples, row c (only
    the classes in ``rows``)."""
    return (moments.m2[rows] / _denominator(moments, ddof)[rows, None]).clamp_min_(0.0)


def bv_variances(moments: ClassMoments, rows: slice = slice(None), ddof: int = 1) -> torch.Tensor:
    """[C, C−1] float64: Var_c(x_c − x_j) for j ≠ c (divisor n − ddof), row c, j in increasing
    order (only the classes in ``rows``)."""
    if not moments.has_cross:
        raise LtBenchError("bv_variances needs ClassMoments(cross=True)")
    c = moments.num_classes
    own = torch.arange(c, device=moments.device)[rows]
    m2_own = moments.cross[rows].gather(1, own[:, None])  # Σ (x_c − m_c)²
    diff = (moments.m2[rows] + m2_own).sub_(moments.cross[rows], alpha=2.0)
    diff /= _denominator(moments, ddof)[rows, None]
    off_diagonal = torch.ones_like(diff, dtype=torch.bool)
    off_diagonal[torch.arange(len(own), device=diff.device), own] = False
    return diff[off_diagonal].reshape(len(own), c - 1).clamp_min_(0.0)


def pv_variances(moments: ClassMoments, components: int | None = None,
                 rows: slice = slice(None), chunk: int = 64) -> torch.Tensor:
    """[C, D†] float64: the D† largest eigenvalues of each class's covariance (ddof=1), largest
    first, tiny negative round-off clamped to 0 (only the classes in ``rows``). ``components=None``
    keeps all C."""
    if not moments.has_full:
        raise LtBenchError("pv_variances needs ClassMoments(full=True)")
    c = moments.num_classes
    d = c if components is None else min(int(components), c)
    first, last, _ = rows.indices(c)
    denominator = _denominator(moments)
    out = torch.zeros(max(0, last - first), d, dtype=torch.float64, device=moments.device)
    for start in range(first, last, chunk):
        stop = min(start + chunk, last)
        cov = moments.full[start:stop] / denominator[start:stop, None, None]
        cov = 0.5 * (cov + cov.transpose(1, 2))
        eig = torch.linalg.eigvalsh(cov)  # ascending
        out[start - first:stop - first] = eig.flip(1)[:, :d]
    return out.clamp_min(0.0)


def log_radii(variances: torch.Tensor, valid: torch.Tensor,
              floor: float = SIGMA_FLOOR) -> torch.Tensor:
    """[C] float64: log r_c = mean_k log σ_c,k, σ floored at ``floor`` × the largest σ of the
    valid classes (at least the smallest normal float64); NaN for the classes not ``valid``."""
    variances = variances.to(torch.float64)
    return class_log_radii(lambda rows: variances[rows], len(variances), valid, floor,
                           chunk=max(1, len(variances)))


def class_log_radii(variances_of, num_classes: int, valid: torch.Tensor,
                    floor: float = SIGMA_FLOOR, chunk: int = 512,
                    on_flat=None) -> torch.Tensor:
    """:func:`log_radii` of ``variances_of(slice(None))``, computed ``chunk`` classes at a time
    from ``variances_of(rows)``: the same numbers with chunk × D temporaries instead of C × D
    ones (at iNaturalist size each C × C float64 temporary is 0.5 GB). Each block's variances are
    computed twice, once for the floor and once for the logs: an O(C·D) pass once an epoch,
    traded for not holding them all.

    ``on_flat(classes)`` is told the valid classes whose logits do not vary along any axis
    (every σ floored), a condition of the data or the model, not of the method. When no valid
    class varies at all there is no spread to compare: every class is then not valid (NaN)."""
    blocks = [slice(a, min(a + chunk, num_classes)) for a in range(0, num_classes, chunk)]
    valid = valid.bool()
    largest = torch.zeros((), dtype=torch.float64)
    for rows in blocks:  # pass 1: the largest variance of a valid class, for the floor
        mask = valid[rows]
        if bool(mask.any()):
            variances = variances_of(rows).to(torch.float64)
            largest = torch.maximum(largest, variances[mask.to(variances.device)].max().cpu())
    sigma_max = float(largest.clamp_min(0.0).sqrt())
    tiny = torch.finfo(torch.float64).tiny
    lowest = max(sigma_max * floor, tiny) if math.isfinite(sigma_max) else tiny
    out, flat = [], []
    for rows in blocks:  # pass 2: log r of each class
        sigma = variances_of(rows).to(torch.float64).clamp_min(0.0).sqrt_()
        flat.append((sigma < lowest).all(dim=1).cpu())
        out.append(sigma.clamp_min_(lowest).log_().mean(dim=1).cpu())
    log_r = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    if out:
        flat_valid = torch.cat(flat) & valid.cpu()
        if on_flat is not None and bool(flat_valid.any()):
            on_flat(flat_valid.nonzero().flatten().tolist(), sigma_max == 0.0)
        if sigma_max == 0.0:
            valid = torch.zeros_like(valid)
    return torch.where(valid.cpu(), log_r, torch.full_like(log_r, float("nan")))


def class_volume_raw_weights(log_r: torch.Tensor, valid: torch.Tensor,
                             class_counts: torch.Tensor,
                             substitute_below: int = 30) -> torch.Tensor | None:
    """Raw weights r_c / n_c (float64, on the CPU), with the paper's substitution.

    A class with fewer than ``substitute_below`` training samples (``class_counts``; the paper's
    S30), and a class without valid statistics, takes exp of the mean log r of the donors: the
    classes at or above the threshold with valid statistics. If no class reaches the threshold,
    the donors are all classes with valid statistics and the small classes keep their own radius.
    ``None`` when no class has valid statistics, or finite ones (keep the current weights).
    """
    log_r = log_r.detach().to(torch.float64).cpu()
    valid = valid.detach().cpu().bool() & torch.isfinite(log_r)
    counts = class_counts.detach().to(torch.float64).cpu()
    if not bool(valid.any()):
        return None
    small = counts < substitute_below
    donors = valid & ~small
    if not bool(donors.any()):
        donors, small = valid, torch.zeros_like(small)
    substitute = log_r[donors].mean()
    log_r = torch.where(small | ~valid, substitute, log_r)
    return log_r.exp() / counts

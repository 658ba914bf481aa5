"""The interface every re-weighting method implements: a weighted criterion.

A method turns per-sample losses into one number, ``mean_b(α_{y_b} · ℓ_b)``. The class weights α
come from ``raw_weights()`` (which a subclass overrides), scaled by the normalisation, and are
uniform before ``start_epoch``. Methods that learn from the logits (class volume) also override
``observe`` / ``reset_statistics`` / ``sync_statistics``; the training loop only ever calls
``criterion(logits, targets, ...)`` and ``criterion.end_epoch()``.

A method may declare what more it needs, and the harness provides exactly that (nothing else):
the penultimate features beside the logits (``needs_features``), a cosine classifier in place of
the backbone's linear one (``head = "cosine"``), a balanced meta set held out of the training
images (``meta_per_class``), and per-sample weights from a one-step look-ahead through the model
(``wants_look_ahead`` / ``look_ahead``, given an ``lt_bench.run.lookahead.LookAhead``). A method
whose batch loss is not a weighted mean of per-sample losses overrides ``loss``.

Why not ``F.cross_entropy(weight=α)``: its mean divides by Σα over the batch, which cancels any
global scale of α, the normalisation (β of the paper) included.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.errors import LtBenchError

NORMALIZATIONS = ("expected", "mean", "none")
#: ``Method.plain_epochs`` of a method that never departs from plain cross-entropy
PLAIN_THROUGHOUT = 2**31 - 1


def as_class_counts(class_counts) -> torch.Tensor:
    """Validated float64 class counts: 1-D, at least two classes, finite, every class > 0."""
    try:
        counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LtBenchError(f"class_counts must be a list of per-class counts: {exc}") from exc
    if counts.dim() != 1 or counts.numel() < 2:
        raise LtBenchError(
            f"class_counts must be a 1-D list with one count per class (at least 2 classes), "
            f"got shape {tuple(counts.shape)}"
        )
    if not torch.isfinite(counts).all() or (counts != counts.round()).any():
        raise LtBenchError("class_counts must be whole numbers")
    empty = (counts <= 0).nonzero().flatten().tolist()
    if empty:
        raise LtBenchError(
            f"class_counts has classes with no training sample (indices {empty[:10]}): "
            "every class needs at least one"
        )
    return counts


def as_weights(raw, num_classes: int, owner: str) -> torch.Tensor:
    """``raw_weights()``'s answer as float64 on the CPU: a tensor, or an array-like (a numpy
    array, a list) of one number per class; anything else is refused in one line."""
    try:
        raw = raw.detach() if isinstance(raw, torch.Tensor) else torch.as_tensor(raw)
        raw = raw.to(torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LtBenchError(f"method {owner}: raw_weights() gave a {type(raw).__name__}, not one "
                           f"number per class ({exc}); return a tensor of {num_classes} "
                           "weights") from None
    if raw.shape != (num_classes,):
        raise LtBenchError(f"method {owner}: raw_weights() gave shape {tuple(raw.shape)}, not "
                           f"({num_classes},): return one weight per class")
    return raw


def normalize(raw: torch.Tensor, counts: torch.Tensor, how: str,
              owner: str = "the method") -> torch.Tensor:
    """Scale raw float64 weights: 'expected' Σ n_i α_i = Σ n_i; 'mean' mean α = 1; 'none'.
    Raw weights must be finite, >= 0 and not all 0: a negative mean would flip every sign, and
    turn the loss into one to maximise, without a NaN to show it."""
    if not torch.isfinite(raw).all() or (raw < 0).any() or not raw.sum() > 0:
        raise LtBenchError(
            f"{owner}: raw_weights() gave {_first(raw)}, but class weights must be finite, >= 0 "
            "and not all 0; this is a bug in the method's raw_weights()"
        )
    if how == "expected":
        scale = counts.sum() / (counts * raw).sum()
    elif how == "mean":
        scale = raw.numel() / raw.sum()
    else:
        scale = torch.ones((), dtype=raw.dtype)
    weights = raw * scale
    if not torch.isfinite(weights).all():
        raise LtBenchError(
            f"{owner}: raw_weights() gave {_first(raw)}, which normalization={how} scales past "
            "the float range; this is a bug in the method's raw_weights()"
        )
    return weights


def _first(values: torch.Tensor, n: int = 10) -> str:
    shown = [round(v, 6) for v in values.flatten().tolist()[:n]]
    return f"{shown}{'…' if values.numel() > n else ''}"


def declared_needs(factory) -> list[str]:
    """What a method class declares it needs from the harness, in words (``lt-bench methods``)."""
    if not (isinstance(factory, type) and issubclass(factory, Method)):
        return []
    needs = ["the penultimate features"] if factory.needs_features else []
    if factory.head:
        needs.append(f"a {factory.head} classifier head")
    if factory.meta_per_class:
        needs.append(f"a balanced meta set ({factory.meta_per_class} images per class by "
                     "default, data.meta_per_class)")
    if factory.wants_look_ahead is not Method.wants_look_ahead:
        needs.append("a one-step look-ahead through the model")
    return needs


class _WeighsAfterInit(type(nn.Module)):
    """Computes the first weights once the whole ``__init__`` chain has run, so a subclass may
    set its attributes before or after ``super().__init__()``."""

    def __call__(cls, *args, **kwargs):
        method = super().__call__(*args, **kwargs)
        method._refresh_weights()
        return method


def cross_entropy_per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of each sample, in float32: log-softmax in bf16 would lose the
    small probabilities of tail classes."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


class Method(nn.Module, metaclass=_WeighsAfterInit):
    """Uniform weights: the plain loss (cross-entropy unless another ``loss`` is chosen)."""

    #: the loss used when ``loss=`` is not given
    default_loss = "ce"
    #: the normalisation used when ``normalization=`` is not given
    default_normalization = "mean"
    # -- capabilities: what the harness gives a method that declares it ------------------------
    #: the penultimate features, passed to ``loss`` as ``features`` ([B, D], float)
    needs_features = False
    #: "cosine": the backbone's classifier ``fc`` becomes a normalised linear layer whose logits
    #: are cosines in [-1, 1] (LDAM-DRW's); None keeps the backbone's own
    head: str | None = None
    #: > 0: a balanced meta set of this many images per class (``data.meta_per_class`` sets it)
    meta_per_class = 0

    def __init__(self, class_counts, *, loss: str | None = None, loss_fn=None,
                 normalization: str | None = None, start_epoch: int = 0):
        """``loss`` names the per-sample loss and ``loss_fn`` is it, built by
        ``lt_bench.build_method`` from the registry; without it only cross-entropy is known."""
        super().__init__()
        counts = as_class_counts(class_counts)
        self.loss_name = loss or self.default_loss
        self.normalization = normalization or self.default_normalization
        if self.normalization not in NORMALIZATIONS:
            raise LtBenchError(
                f"normalization={self.normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        if int(start_epoch) != start_epoch or start_epoch < 0:
            raise LtBenchError(f"start_epoch must be a whole number >= 0, got {start_epoch!r}")
        self.start_epoch = int(start_epoch)
        if loss_fn is None and self.loss_name != "ce":
            raise LtBenchError(f"loss {self.loss_name!r} needs its function: build the method "
                               "with lt_bench.build_method(name, counts, loss=...)")
        self.loss_fn = loss_fn if loss_fn is not None else cross_entropy_per_sample
        self.register_buffer("class_counts", counts)
        self.register_buffer("class_weights", torch.ones(counts.numel(), dtype=torch.float32))
        #: completed epochs, i.e. how many times end_epoch() was called. A Python int, not a
        #: buffer: the training step reads it, and reading a GPU buffer would sync every step.
        self.epoch = 0
        #: wants_statistics() of the current epoch, asked once per epoch rather than every step
        #: (a compiled criterion would otherwise guard on, and recompile for, each epoch)
        self._observing: bool | None = None
        self._looking: bool | None = None

    # -- what a subclass overrides -------------------------------------------------------------
    def raw_weights(self) -> torch.Tensor | None:
        """Unnormalised float64 weights, one per class; None keeps the current weights."""
        return torch.ones_like(self.class_counts)

    def wants_statistics(self) -> bool:
        """Whether the logits of the current epoch are needed (to skip work when not)."""
        return False

    def observe(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Record the statistics of a training batch (detached logits)."""

    def reset_statistics(self) -> None:
        """Forget the statistics gathered since the last ``end_epoch``."""

    def sync_statistics(self) -> None:
        """Combine the statistics of all torch.distributed ranks (called by ``end_epoch``)."""

    def wants_look_ahead(self) -> bool:
        """Whether this epoch's steps need ``look_ahead`` (asked once per epoch)."""
        return False

    def look_ahead(self, step) -> torch.Tensor:
        """Per-sample weights [B] for a training batch from a one-step look-ahead on the meta
        set; ``step`` is an ``lt_bench.run.lookahead.LookAhead``. Called only when
        ``wants_look_ahead()``; the weights replace the class weights in ``loss``."""
        raise NotImplementedError(f"{type(self).__name__} wants a look-ahead but has none")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, features=None,
             sample_weights=None) -> torch.Tensor:
        """The batch loss: ``mean_b(w_b · ℓ_b)`` with ``w_b = α_{y_b}`` or, when given, the
        look-ahead's per-sample weights."""
        per_sample = self.loss_fn(logits, targets)
        weights = self.class_weights[targets] if sample_weights is None else sample_weights
        return (weights.to(per_sample.dtype) * per_sample).mean()

    # -- the interface the training loop uses --------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.class_counts.numel()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, observe: bool = True, *,
                features: torch.Tensor | None = None,
                sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        if logits.shape[0] == 0:
            raise LtBenchError("the batch is empty: a criterion needs at least one sample")
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise LtBenchError(f"targets must be class indices (an integer tensor), got "
                               f"{targets.dtype}: convert them with targets.long()")
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise LtBenchError(
                f"logits must have shape [batch, {self.num_classes}], got {tuple(logits.shape)}"
            )
        if logits.device.type == "cpu" and not torch.isfinite(logits).all():
            # On accelerators this check would synchronise every step; there the statistics
            # (end_epoch) and the training loop's logged loss catch non-finite logits instead.
            raise LtBenchError(
                "the model produced non-finite logits (NaN or inf): lower the learning rate, "
                "use fp32 precision, or check the input data"
            )
        if self._observing is None:
            self._observing = bool(self.wants_statistics())
        if observe and self.training and self._observing:
            self.observe(logits.detach(), targets)
        if self.needs_features and features is None:
            raise LtBenchError(f"{type(self).__name__} needs the penultimate features: call it "
                               "as criterion(logits, targets, features=features)")
        return self.loss(logits, targets, features, sample_weights)

    @property
    def looks_ahead(self) -> bool:
        """``wants_look_ahead()`` of the current epoch, asked once per epoch."""
        if self._looking is None:
            self._looking = bool(self.wants_look_ahead())
        return self._looking

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Close an epoch: recompute the weights from the statistics gathered since the last call."""
        self.sync_statistics()
        self.epoch += 1
        self._observing = self._looking = None
        self._refresh_weights()
        self.reset_statistics()

    # -- the fork at the re-weighting start ----------------------------------------------------
    @property
    def plain_epochs(self) -> int:
        """How many leading epochs this method trains exactly as plain cross-entropy with
        uniform weights, keeping no state: runs that share them (same data, backbone, seed and
        protocol) train them once and fork (``lt-bench sweep``, ``fork=true``). Read from the
        loss, ``start_epoch`` and ``wants_statistics``; ``PLAIN_THROUGHOUT`` for a method that
        never departs from it. Override it if a method differs from plain cross-entropy in any
        other way before ``start_epoch``. One that overrides ``loss`` or swaps the head counts
        as never plain unless it overrides this too; a look-ahead is found like statistics."""
        own = type(self)
        if (self.loss_name != "ce" or self.loss_fn is not cross_entropy_per_sample
                or own.loss is not Method.loss or self.head is not None):
            return 0
        if (own.raw_weights is Method.raw_weights and own.wants_statistics is
                Method.wants_statistics and own.wants_look_ahead is Method.wants_look_ahead):
            return PLAIN_THROUGHOUT
        saved = self.epoch
        try:
            for epoch in range(self.start_epoch):
                self.epoch = epoch
                if self.wants_statistics() or self.wants_look_ahead():
                    return epoch
            return self.start_epoch
        finally:
            self.epoch = saved

    @torch.no_grad()
    def start_at(self, epoch: int) -> None:
        """Continue from a trunk of ``epoch`` plain epochs: the state ``end_epoch`` leaves after
        that many epochs in which nothing was observed."""
        if epoch > self.plain_epochs:
            raise LtBenchError(f"this {type(self).__name__} departs from plain cross-entropy "
                               f"after {self.plain_epochs} epochs: it cannot branch from a "
                               f"trunk of {epoch}")
        self.reset_statistics()
        self.epoch = int(epoch)
        self._observing = self._looking = None
        self._refresh_weights()

    def _refresh_weights(self) -> None:
        if self.epoch < self.start_epoch:
            self.class_weights.fill_(1.0)
            return
        raw = self.raw_weights()
        if raw is not None:
            weights = normalize(as_weights(raw, self.num_classes, type(self).__name__),
                                self.class_counts.cpu(), self.normalization,
                                f"method {type(self).__name__}")
            self.class_weights.copy_(weights.to(self.class_weights.device))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        saved = state_dict.get("class_counts")
        if saved is not None and tuple(saved.shape) != tuple(self.class_counts.shape):
            raise LtBenchError(f"this state is of a criterion for {saved.numel()} classes, not "
                               f"{self.num_classes}: it belongs to another data set or run")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # state_dict() carries the epoch counter beside the buffers (weights, statistics)
    def get_extra_state(self) -> dict:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._observing = self._looking = None

    # -- introspection (lt-bench methods) ------------------------------------------------------
    @classmethod
    def options(cls) -> dict[str, object]:
        """Keyword options with their defaults, from every ``__init__`` along the class tree."""
        found: dict[str, object] = {}
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or not issubclass(klass, Method):
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.name != "loss_fn":  # given by build_method
                    found[p.name] = None if p.default is p.empty else p.default
        found["loss"] = cls.default_loss
        found["normalization"] = cls.default_normalization
        return found

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, loss={self.loss_name}, "
                f"normalization={self.normalization}, start_epoch={self.start_epoch}")


"""VL-LTR-style language-guided recognition (Tian et al. 2022, stage 2) as a backbone.

The network is an image tower E followed by a two-branch head on the image feature f = E(x)
([B, D]):

* z1 = MLP(f), an MLP D → 4D → ReLU → C (the "vision" branch);
* z2, the language branch: each class c has M_c ≤ 64 text anchors t_c,m ∈ R^D (sentence
  embeddings, padded to M with a mask). The image attends over its class's anchors,
  a_c = softmax_m(⟨Wq·LN(f), Wk·LN(t_c,m)⟩ / √D) (padding masked; Wq and Wk have no bias and
  start as the identity), pools v_c = Σ_m a_c,m · t_c,m and scores z2_c = e^s · cos(f, v_c),
  with s a frozen log logit scale (CLIP's, log(1/0.07) unless read from a CLIP checkpoint).

**Contract with the training loop.** In training mode ``forward(images)`` returns the tuple
``(z1, z2)`` of logits [B, C]; the harness applies the method's class weights to the loss of each
branch and adds them, ``criterion(z1, y) + criterion(z2, y, observe=False)``, so that statistics
(class-volume methods) come from z1 only. In eval mode ``forward`` returns one score tensor [B, C]
for prediction, log(α · softmax(z1) + (1 − α) · softmax(z2)) (α = ``alpha``: 0.2 for ImageNet-LT
and Places-LT, 0.7 for iNaturalist in the paper); its argmax is the prediction.

**Memory.** The head never builds [B, C, D] (nor [B, C, M, D]) tensors; the largest activations
are [B, C, M] (how: :mod:`lt_bench.backbones.vl_ltr_head`).

**Towers** (``tower=``): ``"RN50"`` or ``"ViT-B-16"``, taken from open_clip (CLIP with QuickGELU;
``pip install 'lt-bench[clip]'``) when it is installed, otherwise from torchvision with a linear
projection to D (``tower_source=`` forces one); ``"resnet32"``, CIFAR ResNet-32 with a projection
to D, for CIFAR-LT beside ResNet-32's plain linear head; ``"tiny"``, a three-layer conv net for
tests and smoke runs on CPU. ``weights=`` is always a local file: for open_clip an OpenAI TorchScript ``.pt``
or a state dict, for torchvision a torchvision state dict. Nothing is ever downloaded. Note that
CLIP towers expect images normalised with CLIP's mean and std.

**Anchors** (``anchors=``), in this order of preference:

1. a file (the format of :func:`load_anchors`);
2. with an open_clip tower and the data set's class names: one prompt per class, "a photo of a
   {name}.", encoded once with CLIP's text tower (M = 1, so the attention is trivial; VL-LTR's
   many-sentence anchors need a file);
3. ``anchors="random"`` or, with the tiny tower, no anchors at all: random fixed unit anchors
   drawn with ``anchor_seed`` (1 to 8 sentences per class). **For smoke tests only**: they carry
   no language information.

**Modules.** This one holds the factory (option checks, which anchors, assembly) and re-exports
the names the pieces define: the anchors in :mod:`~lt_bench.backbones.vl_ltr_anchors`, the towers
and CLIP checkpoint reading in :mod:`~lt_bench.backbones.vl_ltr_towers`, the head and the model in
:mod:`~lt_bench.backbones.vl_ltr_head`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lt_bench.backbones.vl_ltr_anchors import (
    RANDOM_SENTENCES,
    check_anchors,
    load_anchors,
    random_anchors,
    save_anchors,
)
from lt_bench.backbones.vl_ltr_head import (
    CLIP_LOGIT_SCALE,
    VLLTR,
    LanguageGuidedHead,
    combine_scores,
)
from lt_bench.backbones.vl_ltr_towers import (
    CLIP_DIMS,
    PROMPT,
    SMALL_TOWERS,
    TINY_DIM,
    TOWER_SOURCES,
    TOWERS,
    CifarResNetTower,
    ClipTower,
    ProjectedTower,
    TinyTower,
    build_clip,
    clip_text_anchors,
    import_open_clip,
    is_torchscript,
    open_clip_available,
    read_clip_checkpoint,
    resolve_tower_source,
)
from lt_bench.errors import LtBenchError

log = logging.getLogger(__name__)


def vl_ltr(num_classes: int, *, class_names: list[str] | None = None, tower: str = "RN50",
           tower_source: str = "auto", weights: str | None = None, freeze_tower: bool = False,
           embed_dim: int | None = None, image_size: int = 224, anchors: str | None = None,
           max_sentences: int = 64, anchor_seed: int = 0, alpha: float = 0.2,
           logit_scale: float | None = None) -> nn.Module:
    """VL-LTR language-guided recognition: CLIP-style tower + MLP and text-anchor branches."""
    check_options(tower, tower_source, alpha, max_sentences)
    source = resolve_tower_source(tower, tower_source)
    file_anchors = None
    if anchors not in (None, "random"):
        file_anchors = load_anchors(anchors, num_classes, None, int(max_sentences), class_names)
    # Decided before the tower is built: a run with no usable anchors fails before weights load.
    anchors = resolve_anchor_option(anchors, file_anchors, source, weights, class_names)
    image_tower, dim, clip_model, tokenizer = build_tower(source, tower, weights, embed_dim,
                                                          image_size, file_anchors)
    if logit_scale is None and clip_model is not None:
        logit_scale = float(clip_model.logit_scale.detach())

    if file_anchors is not None:
        anchor_t, counts = check_anchors(*file_anchors, num_classes, dim, int(max_sentences),
                                         source=str(anchors))
    elif clip_model is not None and class_names and anchors != "random":
        anchor_t = clip_text_anchors(clip_model, tokenizer, class_names)
        counts = torch.ones(num_classes, dtype=torch.long)
    else:  # anchors=random, or the tiny tower without a file
        anchor_t, counts = random_anchors(num_classes, dim, anchor_seed)
    del clip_model  # the text tower is not part of the model
    head = LanguageGuidedHead(num_classes, dim, anchor_t, counts,
                              CLIP_LOGIT_SCALE if logit_scale is None else float(logit_scale))
    return VLLTR(image_tower, head, alpha=float(alpha), freeze_tower=bool(freeze_tower))


def check_options(tower: str, tower_source: str, alpha: float, max_sentences: int) -> None:
    """The option checks that need no file and no tower: an LtBenchError naming the option."""
    if tower not in TOWERS:
        raise LtBenchError(f"vl_ltr: tower={tower!r} is not one of {', '.join(TOWERS)}")
    if tower_source not in TOWER_SOURCES:
        raise LtBenchError(f"vl_ltr: tower_source={tower_source!r} is not one of "
                           f"{', '.join(TOWER_SOURCES)}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise LtBenchError(f"vl_ltr: alpha must be in [0, 1], got {alpha!r}")
    if int(max_sentences) != max_sentences or max_sentences < 1:
        raise LtBenchError(f"vl_ltr: max_sentences must be a whole number >= 1, "
                           f"got {max_sentences!r}")


def resolve_anchor_option(anchors, file_anchors, source: str, weights, class_names):
    """``anchors`` as given, or ``"random"`` for a random tower; an error if none can be had."""
    if file_anchors is not None or anchors == "random" or source == "tiny":
        return anchors
    if source == "resnet32":
        log.warning("vl_ltr: tower=resnet32 and no anchors file: using random class anchors, "
                    "which carry no language (write a file with `lt-bench anchors`)")
        return "random"
    from_names = source == "open_clip" and class_names
    if weights is None and not from_names:
        # A tower with random weights has nothing to align with real anchors either: such a
        # run is a smoke test, and random anchors keep it runnable. Said loudly.
        log.warning("vl_ltr: random tower weights and no anchors file: using random class "
                    "anchors (a smoke test; give backbone.weights and backbone.anchors for real "
                    "runs)")
        return "random"
    if not from_names:
        raise LtBenchError(
            "vl_ltr: no class text anchors: give anchors=<file> (write one with `lt-bench "
            "anchors`), use an open_clip tower (pip install 'lt-bench[clip]') so that they are "
            "computed from the class names, or anchors=random (smoke tests only)"
        )
    return anchors


def build_tower(source: str, tower: str, weights, embed_dim, image_size, file_anchors):
    """``(image tower, D, CLIP model or None, tokenizer or None)`` for a resolved source.

    The CLIP model is returned for its text tower and logit scale; only its image encoder
    becomes part of the network.
    """
    if source in SMALL_TOWERS:
        if weights:
            raise LtBenchError(f"vl_ltr: tower={tower} has no weights; unset weights or choose "
                               "tower=RN50 or tower=ViT-B-16")
        dim = int(embed_dim or (file_anchors[0].shape[2] if file_anchors else TINY_DIM))
        return (TinyTower(dim) if source == "tiny" else CifarResNetTower(dim)), dim, None, None
    if source == "open_clip":
        clip_model, tokenizer = build_clip(tower, weights, int(image_size))
        dim = int(getattr(clip_model.visual, "output_dim", CLIP_DIMS[tower]))
        if embed_dim and embed_dim != dim:
            raise LtBenchError(f"vl_ltr: the CLIP {tower} tower gives {dim}-dimensional "
                               f"features; unset embed_dim or set it to {dim}")
        return ClipTower(clip_model.visual, dim), dim, clip_model, tokenizer
    dim = embed_dim or (file_anchors[0].shape[2] if file_anchors else CLIP_DIMS[tower])
    return ProjectedTower(tower, int(dim), weights, int(image_size)), dim, None, None


# Everything the single vl_ltr module used to define stays importable from it: plugins, tests
# and benchmarks import these names from here, not from the modules that now hold them.
__all__ = [
    "CLIP_DIMS", "CLIP_LOGIT_SCALE", "PROMPT", "RANDOM_SENTENCES", "SMALL_TOWERS", "TINY_DIM", "TOWERS",
    "TOWER_SOURCES", "VLLTR", "CifarResNetTower", "ClipTower", "LanguageGuidedHead", "ProjectedTower", "TinyTower",
    "build_clip", "check_anchors", "clip_text_anchors", "combine_scores", "import_open_clip",
    "is_torchscript", "load_anchors", "open_clip_available", "random_anchors",
    "read_clip_checkpoint", "resolve_tower_source", "save_anchors", "vl_ltr",
]

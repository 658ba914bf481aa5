"""Class text anchors of the VL-LTR backbone: read from a file, validated, or drawn at random.

An anchor set is ``(anchors [C, M, D] float32, counts [C] int64)``: class c's sentence embeddings
are rows ``0 .. counts[c]-1`` of ``anchors[c]``, later rows are zero padding. The file format is
that of :func:`load_anchors`; :mod:`lt_bench.backbones.vl_ltr` says when each source is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lt_bench.errors import LtBenchError
from lt_bench.workspace.files import atomic_writer

RANDOM_SENTENCES = 8


def load_anchors(path, num_classes: int | None = None, dim: int | None = None,
                 max_sentences: int = 64, class_names: list[str] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Read class text anchors: ``(anchors [C, M, D] float32, counts [C] int64)``.

    File formats (``M`` is the largest number of sentences of any class; class c's sentences
    are rows ``0 .. counts[c]-1`` of ``anchors[c]``; later rows are padding and are ignored):

    * ``.pt`` / ``.pth``: ``torch.save({"anchors": float tensor [C, M, D],
      "counts": int tensor [C]}, path)``; ``counts`` may be omitted (see ``.npy``); a
      ``"class_names"`` list must equal ``class_names`` when both are known; other keys are
      ignored (``lt-bench anchors`` adds ``"encoder"`` and ``"sentences"``);
    * ``.npz``: ``numpy.savez(path, anchors=[C, M, D], counts=[C])``, same meaning;
    * ``.npy``: ``numpy.save(path, anchors)`` of a float array [C, M, D] alone; padding rows must
      be all zeros and come last: ``counts[c]`` is one past the last non-zero row of class c.

    Anchors are used as stored (VL-LTR stores L2-normalised CLIP sentence embeddings). More
    than ``max_sentences`` sentences per class are cut to the first ``max_sentences``.
    """
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise LtBenchError(f"vl_ltr: anchors file {str(path)!r} not found: give an existing "
                           ".pt/.npz/.npy file (see lt_bench.backbones.vl_ltr.load_anchors)")
    suffix = file.suffix.lower()
    counts = stored_names = None
    try:
        if suffix in (".pt", ".pth"):
            data = torch.load(file, map_location="cpu", weights_only=True)
            if isinstance(data, dict):
                if "anchors" not in data:
                    raise ValueError(f"the dict has no 'anchors' key (keys: {sorted(data)})")
                anchors, counts = data["anchors"], data.get("counts")
                stored_names = data.get("class_names")
            else:
                anchors = data
        elif suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                if "anchors" not in data:
                    raise ValueError(f"no 'anchors' array (arrays: {sorted(data.files)})")
                anchors = data["anchors"]
                counts = data["counts"] if "counts" in data else None
        elif suffix == ".npy":
            anchors = np.load(file, allow_pickle=False)
        else:
            raise ValueError(f"unknown extension {suffix!r}")
        anchors = torch.as_tensor(np.asarray(anchors) if not isinstance(anchors, torch.Tensor)
                                  else anchors).float()
        if counts is not None:
            counts = torch.as_tensor(np.asarray(counts) if not isinstance(counts, torch.Tensor)
                                     else counts)
    except LtBenchError:
        raise
    except Exception as exc:
        # torch's message for a pickle it refused is a paragraph ending in advice to load it
        # with weights_only=False, which would run the file's code: only its first line is kept
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        if "weights_only" in str(exc) or "Unpickler" in str(exc):
            first = "it holds objects other than tensors, lists and numbers, which are never loaded"
        raise LtBenchError(
            f"vl_ltr: anchors file {str(file)!r} could not be read ({type(exc).__name__}: "
            f"{first}); expected .pt {{'anchors': [C, M, D], 'counts': [C]}}, .npz with those "
            "arrays, or .npy [C, M, D] with zero padding rows") from None
    if stored_names is not None and (
            not isinstance(stored_names, (list, tuple))
            or not all(isinstance(n, str) for n in stored_names)):
        raise LtBenchError(f"vl_ltr: anchors file {str(file)!r}: class_names must be a list of "
                           f"names, got {type(stored_names).__name__}; write it again with "
                           "`lt-bench anchors`")
    check_class_names(stored_names, class_names, file)
    return check_anchors(anchors, counts, num_classes, dim, max_sentences, source=str(file))


def check_class_names(stored, expected, file, what: str | None = None) -> None:
    """An anchors file written for other classes, or in another label order, is refused
    (``what``: the source when it is not an anchors file, e.g. ``--names``)."""
    if stored is None or expected is None or list(stored) == list(expected):
        return
    where = what or "the file"
    if len(stored) == len(expected):
        i = next(i for i, (a, b) in enumerate(zip(stored, expected)) if a != b)
        why = f"class {i} is {stored[i]!r} in {where} and {expected[i]!r} in the data set"
    else:
        why = f"{where} names {len(stored)} classes, the data set has {len(expected)}"
    if what is not None:
        raise LtBenchError(f"anchors: {what} does not name the data set's classes: {why}")
    raise LtBenchError(f"vl_ltr: anchors file {str(file)!r} was written for other classes: {why};"
                       " write it again with `lt-bench anchors` for this data set")


def save_anchors(path, anchors: torch.Tensor, counts: torch.Tensor, class_names: list[str],
                 **extra) -> Path:
    """Write an anchors file :func:`load_anchors` reads, with the class names and ``extra``."""
    anchors, counts = check_anchors(anchors, counts, len(class_names), None, 10**9,
                                    source=str(path))

    file = Path(str(path)).expanduser()
    # a fresh temporary beside it, renamed over it: a planted link is neither followed nor
    # replaced (the folder is the user's, as typed)
    with atomic_writer(file, root=file.parent) as f:
        torch.save({"anchors": anchors, "counts": counts, "class_names": list(class_names),
                    **extra}, f)
    return file


def check_anchors(anchors: torch.Tensor, counts: torch.Tensor | None, num_classes=None, dim=None,
                  max_sentences: int = 64, source: str = "anchors"):
    """Validated ``(anchors [C, M, D] float32 with zeroed padding, counts [C] int64)``."""
    anchors = torch.as_tensor(anchors).detach().float().cpu()
    where = f"vl_ltr: {source!r}"
    if anchors.dim() != 3 or 0 in anchors.shape:
        raise LtBenchError(f"{where}: anchors must have shape [classes, sentences, dim], "
                           f"got {tuple(anchors.shape)}")
    C, M, D = anchors.shape
    if num_classes is not None and C != num_classes:
        raise LtBenchError(f"{where}: anchors are for {C} classes, the data set has "
                           f"{num_classes}; give the anchors file of this data set")
    if dim is not None and D != dim:
        raise LtBenchError(f"{where}: anchors have dimension {D}, the image tower gives {dim}; "
                           "use anchors from the same CLIP model or set embed_dim")
    if not torch.isfinite(anchors).all():
        raise LtBenchError(f"{where}: anchors contain NaN or inf")
    if counts is None:
        nonzero = anchors.abs().amax(dim=2) > 0                              # [C, M]
        positions = torch.arange(1, M + 1).expand(C, M)
        counts = (positions * nonzero).amax(dim=1)
    counts = torch.as_tensor(counts)
    if counts.shape != (C,) or counts.is_floating_point() and (counts != counts.round()).any():
        raise LtBenchError(f"{where}: counts must be {C} whole numbers, one per class, "
                           f"got shape {tuple(counts.shape)}")
    counts = counts.long()
    bad = ((counts < 1) | (counts > M)).nonzero().flatten().tolist()
    if bad:
        raise LtBenchError(f"{where}: every class needs 1 to {M} sentences; classes {bad[:10]} "
                           f"have counts {counts[bad[:10]].tolist()}")
    if M > max_sentences:
        anchors, counts, M = anchors[:, :max_sentences], counts.clamp_max(max_sentences), \
            max_sentences
    mask = torch.arange(M)[None, :] < counts[:, None]
    return (anchors * mask[..., None]).contiguous(), counts


def random_anchors(num_classes: int, dim: int, seed: int = 0,
                   sentences: int = RANDOM_SENTENCES) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random unit anchors with 1..sentences sentences per class: smoke tests only."""
    gen = torch.Generator().manual_seed(int(seed))
    anchors = F.normalize(torch.randn(num_classes, sentences, dim, generator=gen), dim=-1)
    counts = torch.randint(1, sentences + 1, (num_classes,), generator=gen)
    return check_anchors(anchors, counts, num_classes, dim, sentences, source="random")

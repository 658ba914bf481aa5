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

**Memory.** The head never builds [B, C, D] (nor [B, C, M, D]) tensors. With f̂ = f/‖f‖,
cos(f, v_c) = Σ_m a_c,m (f̂·t_c,m) / sqrt(aᵀ G_c a) where G_c = T_c T_cᵀ ([C, M, M]) is
precomputed; and the attention scores are reassociated so that the keys Wk·LN(t) ([C, M, D], and
C·M·D² multiply-adds) are never formed either: ⟨q, Wk·LN(t)⟩ = ((Wkᵀq) ⊙ γ)·(t − μ_t)/σ_t +
(Wkᵀq)·β with the per-anchor mean μ_t and deviation σ_t precomputed ([C, M]). The largest
activations are [B, C, M]. Derived buffers are recomputed whenever the anchors change.

**Towers** (``tower=``): ``"RN50"`` or ``"ViT-B-16"``, taken from open_clip (CLIP with QuickGELU;
``pip install 'lt-bench[clip]'``) when it is installed, otherwise from torchvision with a linear
projection to D (``tower_source=`` forces one); ``"tiny"``, a three-layer conv net for tests and
smoke runs on CPU. ``weights=`` is always a local file: for open_clip an OpenAI TorchScript ``.pt``
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
"""

from __future__ import annotations

import importlib.util
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.errors import LtBenchError

#: embedding width of the CLIP towers (and the default D of the torchvision fallbacks)
CLIP_DIMS = {"RN50": 1024, "ViT-B-16": 512}
TOWERS = ("tiny", *CLIP_DIMS)
TOWER_SOURCES = ("auto", "open_clip", "torchvision")
#: CLIP's initial log logit scale, log(1/0.07)
CLIP_LOGIT_SCALE = math.log(1 / 0.07)
PROMPT = "a photo of a {}."
TINY_DIM = 64
RANDOM_SENTENCES = 8


# -- anchors --------------------------------------------------------------------------------------
def load_anchors(path, num_classes: int | None = None, dim: int | None = None,
                 max_sentences: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Read class text anchors: ``(anchors [C, M, D] float32, counts [C] int64)``.

    File formats (``M`` is the largest number of sentences of any class; class c's sentences
    are rows ``0 .. counts[c]-1`` of ``anchors[c]``; later rows are padding and are ignored):

    * ``.pt`` / ``.pth``: ``torch.save({"anchors": float tensor [C, M, D],
      "counts": int tensor [C]}, path)``; ``counts`` may be omitted (see ``.npy``) and an
      optional ``"class_names"`` list is ignored;
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
    counts = None
    try:
        if suffix in (".pt", ".pth"):
            data = torch.load(file, map_location="cpu", weights_only=True)
            if isinstance(data, dict):
                if "anchors" not in data:
                    raise ValueError(f"the dict has no 'anchors' key (keys: {sorted(data)})")
                anchors, counts = data["anchors"], data.get("counts")
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
        raise LtBenchError(
            f"vl_ltr: anchors file {str(file)!r} could not be read ({type(exc).__name__}: {exc});"
            " expected .pt {'anchors': [C, M, D], 'counts': [C]}, .npz with those arrays, or "
            ".npy [C, M, D] with zero padding rows"
        ) from exc
    return check_anchors(anchors, counts, num_classes, dim, max_sentences, source=str(file))


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


# -- the head -------------------------------------------------------------------------------------
def combine_scores(z1: torch.Tensor, z2: torch.Tensor, alpha: float) -> torch.Tensor:
    """log(α·softmax(z1) + (1−α)·softmax(z2)), computed in log space (float32)."""
    lp1 = F.log_softmax(z1.float(), dim=-1)
    lp2 = F.log_softmax(z2.float(), dim=-1)
    if alpha >= 1.0:
        return lp1
    if alpha <= 0.0:
        return lp2
    return torch.logaddexp(lp1 + math.log(alpha), lp2 + math.log1p(-alpha))


class LanguageGuidedHead(nn.Module):
    """The two branches on a feature f [B, D]: ``(z1, z2)``, see the module docstring."""

    def __init__(self, num_classes: int, dim: int, anchors: torch.Tensor, counts: torch.Tensor,
                 logit_scale: float = CLIP_LOGIT_SCALE, mlp_ratio: int = 4):
        super().__init__()
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_ratio * dim, num_classes))
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(dim)
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.w_q.weight.copy_(torch.eye(dim))
            self.w_k.weight.copy_(torch.eye(dim))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        anchors, counts = check_anchors(anchors, counts, num_classes, dim, max_sentences=10**9)
        self.register_buffer("anchors", anchors)
        self.register_buffer("anchor_mask", torch.arange(anchors.shape[1])[None] < counts[:, None])
        # derived from the anchors, recomputed when they change (not saved in checkpoints)
        self.register_buffer("anchor_mean", torch.empty(0), persistent=False)
        self.register_buffer("anchor_inv_std", torch.empty(0), persistent=False)
        self.register_buffer("gram", torch.empty(0), persistent=False)
        self._derived_key = None

    def set_anchors(self, anchors: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Replace the anchors (any number of sentences); derived buffers follow."""
        anchors, counts = check_anchors(anchors, counts, self.num_classes, self.dim, 10**9)
        device = self.anchors.device
        self.anchors = anchors.to(device)
        self.anchor_mask = (torch.arange(anchors.shape[1])[None] < counts[:, None]).to(device)
        self._derived_key = None

    def _key(self):
        a, m = self.anchors, self.anchor_mask
        return (a.data_ptr(), a._version, a.shape, a.device, m.data_ptr(), m._version)

    @torch.no_grad()
    def refresh(self) -> None:
        """(Re)compute G_c = T_c T_cᵀ and each anchor's mean and 1/std if the anchors changed."""
        if self._derived_key == self._key() and self.gram.numel():
            return
        t = self.anchors  # padding rows do not matter: their attention weight is exactly 0
        self.anchor_mean = t.mean(dim=-1)
        self.anchor_inv_std = torch.rsqrt(t.var(dim=-1, unbiased=False) + self.ln_k.eps)
        self.gram = torch.bmm(t, t.transpose(1, 2))
        self._derived_key = self._key()

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1 = self.mlp(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            z2 = self.language_logits(f.float())
        return z1, z2

    def language_logits(self, f: torch.Tensor) -> torch.Tensor:
        """z2 [B, C] in float32 without any [B, C, D] tensor."""
        self.refresh()
        C, M, D = self.anchors.shape
        B = f.shape[0]
        q = self.w_q(self.ln_q(f))                                           # [B, D]
        qk = q @ self.w_k.weight                                             # Wkᵀq [B, D]
        qg = qk * self.ln_k.weight                                           # (Wkᵀq) ⊙ γ
        f_hat = F.normalize(f, dim=-1)
        dots = torch.cat([qg, f_hat]) @ self.anchors.reshape(C * M, D).t()   # [2B, C·M]
        dots = dots.view(2, B, C, M)
        q_t, f_t = dots[0], dots[1]                                          # [B, C, M] each
        scores = (q_t - qg.sum(-1)[:, None, None] * self.anchor_mean) * self.anchor_inv_std
        scores = (scores + (qk @ self.ln_k.bias)[:, None, None]) / math.sqrt(D)
        scores = scores.masked_fill(~self.anchor_mask, float("-inf"))
        attn = scores.softmax(dim=-1)                                        # [B, C, M]
        numer = (attn * f_t).sum(-1)                                         # f̂·v_c [B, C]
        attn_c = attn.transpose(0, 1)                                        # [C, B, M]
        sq_norm = (torch.bmm(attn_c, self.gram) * attn_c).sum(-1).t()        # ‖v_c‖² [B, C]
        cos = numer * sq_norm.clamp_min(1e-12).rsqrt()
        return self.logit_scale.exp() * cos

    def extra_repr(self) -> str:
        C, M, D = self.anchors.shape
        return f"classes={C}, sentences={M}, dim={D}, logit_scale={float(self.logit_scale):.4f}"


# -- towers ---------------------------------------------------------------------------------------
class TinyTower(nn.Module):
    """Three stride-2 3×3 convolutions (16/32/64 channels), average pool, projection to D."""

    def __init__(self, dim: int = TINY_DIM):
        super().__init__()
        layers, width = [], 3
        for out in (16, 32, 64):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width = out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(width, dim)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x).mean(dim=(2, 3)))


class ProjectedTower(nn.Module):
    """A torchvision network whose classifier is replaced by a projection to D."""

    def __init__(self, tower: str, dim: int, weights: str | None, image_size: int):
        super().__init__()
        from lt_bench.backbones import torchvision_models as tv

        if tower == "RN50":
            self.net = tv.resnet50(1000, weights=weights)
            self.net.fc = nn.Linear(self.net.fc.in_features, dim)
        else:
            self.net = tv.vit_b_16(1000, weights=weights, image_size=image_size)
            self.net.heads = nn.Linear(self.net.hidden_dim, dim)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClipTower(nn.Module):
    """The image encoder of an open_clip CLIP model (its output is already projected to D)."""

    def __init__(self, visual: nn.Module, dim: int):
        super().__init__()
        self.visual = visual
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out


def open_clip_available() -> bool:
    return importlib.util.find_spec("open_clip") is not None


def import_open_clip():
    """open_clip, or an LtBenchError saying how to install it."""
    try:
        import open_clip
    except ImportError as exc:
        raise LtBenchError(
            "vl_ltr: tower_source='open_clip' needs open-clip-torch: pip install 'lt-bench[clip]' "
            "(or use tower_source=torchvision, or tower=tiny)"
        ) from exc
    return open_clip


def resolve_tower_source(tower: str, tower_source: str) -> str:
    if tower == "tiny":
        return "tiny"
    if tower_source == "auto":
        return "open_clip" if open_clip_available() else "torchvision"
    return tower_source


def is_torchscript(file: Path) -> bool:
    """Whether a file is a TorchScript archive (a zip with a ``code/`` folder)."""
    try:
        with zipfile.ZipFile(file) as archive:
            return any(n.split("/")[1:2] == ["code"] for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_clip_checkpoint(path) -> dict[str, torch.Tensor]:
    """The state dict of a local CLIP checkpoint: OpenAI TorchScript archive or state dict."""
    from lt_bench.backbones.torchvision_models import read_state_dict

    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise LtBenchError(f"vl_ltr: weights file {str(path)!r} not found: give a local CLIP "
                           "checkpoint (OpenAI .pt or a state dict); nothing is downloaded")
    if is_torchscript(file):  # OpenAI's released checkpoints are TorchScript archives
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.jit.load(str(file), map_location="cpu").state_dict()
        except Exception as exc:
            raise LtBenchError(f"vl_ltr: weights file {str(file)!r} could not be read as a "
                               f"TorchScript CLIP ({type(exc).__name__}: {exc})") from exc
    else:
        state = read_state_dict(file, what="vl_ltr: weights")
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def build_clip(tower: str, weights: str | None, image_size: int):
    """An open_clip CLIP (QuickGELU) with random weights or those of a local checkpoint."""
    open_clip = import_open_clip()
    kwargs = {"force_quick_gelu": True}
    if image_size != 224:
        kwargs["force_image_size"] = int(image_size)
    model = open_clip.create_model(tower, pretrained=None, **kwargs)
    if weights:
        state = read_clip_checkpoint(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise LtBenchError(f"vl_ltr: weights file {str(weights)!r} is not a CLIP {tower} "
                               f"checkpoint: {str(exc).splitlines()[0]}") from exc
    model.float().eval()
    return model, open_clip.get_tokenizer(tower)


@torch.no_grad()
def clip_text_anchors(model, tokenizer, class_names, batch_size: int = 256) -> torch.Tensor:
    """[C, 1, D] L2-normalised CLIP text embeddings of "a photo of a {name}." (on GPU if any)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    prompts = [PROMPT.format(name.replace("_", " ")) for name in class_names]
    chunks = []
    for i in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[i:i + batch_size]).to(device)
        chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    model.to("cpu")
    return torch.cat(chunks)[:, None, :]


# -- the model ------------------------------------------------------------------------------------
class VLLTR(nn.Module):
    """Image tower + language-guided head; (z1, z2) in training, combined scores in eval."""

    def __init__(self, tower: nn.Module, head: LanguageGuidedHead, alpha: float = 0.2,
                 freeze_tower: bool = False):
        super().__init__()
        self.tower, self.head = tower, head
        self.alpha = float(alpha)
        self.freeze_tower = bool(freeze_tower)
        if self.freeze_tower:
            self.tower.requires_grad_(False)
            self.tower.eval()
        # DistributedDataParallel must not broadcast the (large, constant) anchor buffers on
        # every forward; it reads this attribute of the module it wraps.
        self._ddp_params_and_buffers_to_ignore = [
            f"head.{name}" for name in ("anchors", "anchor_mask", "anchor_mean",
                                        "anchor_inv_std", "gram")]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_tower:
            self.tower.eval()  # batch-norm statistics and dropout of a frozen tower stay fixed
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze_tower:
            with torch.no_grad():
                return self.tower(images)
        return self.tower(images)

    def forward(self, images: torch.Tensor):
        z1, z2 = self.head(self.features(images))
        if self.training:
            return z1, z2
        return combine_scores(z1, z2, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, freeze_tower={self.freeze_tower}"


def vl_ltr(num_classes: int, *, class_names: list[str] | None = None, tower: str = "RN50",
           tower_source: str = "auto", weights: str | None = None, freeze_tower: bool = False,
           embed_dim: int | None = None, image_size: int = 224, anchors: str | None = None,
           max_sentences: int = 64, anchor_seed: int = 0, alpha: float = 0.2,
           logit_scale: float | None = None) -> nn.Module:
    """VL-LTR language-guided recognition: CLIP-style tower + MLP and text-anchor branches."""
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
    source = resolve_tower_source(tower, tower_source)

    file_anchors = None
    if anchors not in (None, "random"):
        file_anchors = load_anchors(anchors, num_classes, None, int(max_sentences))

    if (file_anchors is None and anchors != "random" and source != "tiny" and weights is None
            and not (source == "open_clip" and class_names)):
        # A tower with random weights has nothing to align with real anchors either: such a
        # run is a smoke test, and random anchors keep it runnable. Said loudly.
        warnings.warn("vl_ltr: random tower weights and no anchors file: using random class "
                      "anchors (a smoke test; give backbone.weights and backbone.anchors for "
                      "real runs)", stacklevel=2)
        anchors = "random"
    if (file_anchors is None and anchors != "random" and source != "tiny"
            and not (source == "open_clip" and class_names)):
        raise LtBenchError(
            "vl_ltr: no class text anchors: give anchors=<file> (see "
            "lt_bench.backbones.vl_ltr.load_anchors for the format), use an open_clip tower "
            "(pip install 'lt-bench[clip]') so that they are computed from the class names, or "
            "anchors=random (smoke tests only)"
        )
    clip_model = tokenizer = None
    if source == "tiny":
        if weights:
            raise LtBenchError("vl_ltr: tower=tiny has no weights; unset weights or choose "
                               "tower=RN50 or tower=ViT-B-16")
        dim = embed_dim or (file_anchors[0].shape[2] if file_anchors else TINY_DIM)
        image_tower: nn.Module = TinyTower(int(dim))
    elif source == "open_clip":
        clip_model, tokenizer = build_clip(tower, weights, int(image_size))
        dim = int(getattr(clip_model.visual, "output_dim", CLIP_DIMS[tower]))
        if embed_dim and embed_dim != dim:
            raise LtBenchError(f"vl_ltr: the CLIP {tower} tower gives {dim}-dimensional "
                               f"features; unset embed_dim or set it to {dim}")
        image_tower = ClipTower(clip_model.visual, dim)
        if logit_scale is None:
            logit_scale = float(clip_model.logit_scale.detach())
    else:
        dim = embed_dim or (file_anchors[0].shape[2] if file_anchors else CLIP_DIMS[tower])
        image_tower = ProjectedTower(tower, int(dim), weights, int(image_size))

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

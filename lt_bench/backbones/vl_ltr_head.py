"""The language-guided head of the VL-LTR backbone and the model that puts a tower before it.

The branches, the eval combination and the contract with the training loop are described in
:mod:`lt_bench.backbones.vl_ltr`.

**Memory.** The head never builds [B, C, D] (nor [B, C, M, D]) tensors. With f̂ = f/‖f‖,
cos(f, v_c) = Σ_m a_c,m (f̂·t_c,m) / sqrt(aᵀ G_c a) where G_c = T_c T_cᵀ ([C, M, M]) is
precomputed; and the attention scores are reassociated so that the keys Wk·LN(t) ([C, M, D], and
C·M·D² multiply-adds) are never formed either: ⟨q, Wk·LN(t)⟩ = ((Wkᵀq) ⊙ γ)·(t − μ_t)/σ_t +
(Wkᵀq)·β with the per-anchor mean μ_t and deviation σ_t precomputed ([C, M]). The largest
activations are [B, C, M]. Derived buffers are recomputed whenever the anchors change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.backbones.vl_ltr_anchors import check_anchors

#: CLIP's initial log logit scale, log(1/0.07)
CLIP_LOGIT_SCALE = math.log(1 / 0.07)


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
    """The two branches on a feature f [B, D], ``(z1, z2)``: see ``lt_bench.backbones.vl_ltr``."""

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

"""VL-LTR backbone: the head against naive references, the eval combination, freezing, anchors."""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import lt_bench
from lt_bench.backbones import build_backbone
from lt_bench.backbones.vl_ltr import (
    CLIP_LOGIT_SCALE,
    LanguageGuidedHead,
    resolve_tower_source,
    vl_ltr,
)
from lt_bench.errors import LtBenchError


def tiny(num_classes=4, **options):
    return build_backbone("vl_ltr", num_classes, tower="tiny", **options)


def ragged_anchors(C=5, M=6, D=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.tensor([1, M, 3, 2, 5][:C])
    anchors = torch.randn(C, M, D, generator=gen)
    return anchors, counts


def perturb(head, seed=1):
    """Move every head parameter away from its initial value (identity, LN ones/zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))


def naive_z2(head, f, anchors, counts):
    """Per class, with only the class's real sentences and the explicit keys and v_c [D]."""
    D = f.shape[1]
    q = head.w_q(head.ln_q(f))                                   # [B, D]
    rows = []
    for b in range(f.shape[0]):
        row = []
        for c in range(anchors.shape[0]):
            t = anchors[c, : counts[c]]                          # [M_c, D]
            k = head.w_k(head.ln_k(t))                           # [M_c, D]
            a = torch.softmax(k @ q[b] / math.sqrt(D), dim=0)
            v = (a[:, None] * t).sum(0)
            row.append(F.cosine_similarity(f[b], v, dim=0))
        rows.append(torch.stack(row))
    return head.logit_scale.exp() * torch.stack(rows)


def naive_z2_batched(head, f, anchors, mask):
    """The same with the [B, C, M, D] and [B, C, D] tensors the real head avoids."""
    D = f.shape[1]
    q = head.w_q(head.ln_q(f))
    k = head.w_k(head.ln_k(anchors))                             # [C, M, D]
    scores = (q[:, None, None, :] * k[None]).sum(-1) / math.sqrt(D)
    a = scores.masked_fill(~mask, float("-inf")).softmax(-1)     # [B, C, M]
    v = (a[..., None] * anchors[None]).sum(2)                    # [B, C, D]
    return head.logit_scale.exp() * F.cosine_similarity(f[:, None, :], v, dim=-1)


# -- the head -------------------------------------------------------------------------------------
def test_identity_init_of_wq_wk_and_default_logit_scale():
    head = tiny(3).head
    D = head.dim
    assert torch.equal(head.w_q.weight, torch.eye(D)) and head.w_q.bias is None
    assert torch.equal(head.w_k.weight, torch.eye(D)) and head.w_k.bias is None
    assert float(head.logit_scale) == pytest.approx(math.log(1 / 0.07))
    assert not head.logit_scale.requires_grad
    assert "logit_scale" not in dict(head.named_parameters())


def test_z2_matches_naive_reference_values_and_gradients():
    torch.manual_seed(0)
    anchors, counts = ragged_anchors()
    head = LanguageGuidedHead(5, 16, anchors, counts, logit_scale=2.0)
    perturb(head)
    with torch.no_grad():  # padding is zeroed on input; garbage there must be masked too
        head.anchors[~head.anchor_mask] = 7.0
    f = torch.randn(3, 16, requires_grad=True)
    z2 = head(f)[1]
    ref = naive_z2(head, f, anchors, counts)
    assert z2.shape == (3, 5)
    torch.testing.assert_close(z2, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(3, 5)
    got = torch.autograd.grad((z2 * upstream).sum(), [f, head.w_k.weight, head.w_q.weight,
                                                       head.ln_k.weight, head.ln_q.bias])
    want = torch.autograd.grad((ref * upstream).sum(), [f, head.w_k.weight, head.w_q.weight,
                                                         head.ln_k.weight, head.ln_q.bias])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    batched = naive_z2_batched(head, f, anchors, head.anchor_mask)
    torch.testing.assert_close(z2, batched, rtol=1e-5, atol=1e-5)


def test_every_head_parameter_gets_a_gradient():
    """DistributedDataParallel fails on parameters left out of the graph."""
    model = tiny(4)
    z1, z2 = model(torch.randn(3, 3, 16, 16))
    (z1.sum() + z2.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    buffers = dict(model.named_buffers())
    assert all(name in buffers for name in model._ddp_params_and_buffers_to_ignore)


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_head_never_materialises_batch_class_dim_tensors():
    B, C, M, D = 8, 40, 4, 32
    gen = torch.Generator().manual_seed(0)
    anchors = torch.randn(C, M, D, generator=gen)
    head = LanguageGuidedHead(C, D, anchors, torch.full((C,), M))
    head.refresh()
    f = torch.randn(B, D, requires_grad=True)
    with LargestTensor() as real:
        z1, z2 = head(f)
        (z1.sum() + z2.sum()).backward()
    assert real.largest < B * C * D  # 2·B·C·M = 2,560 at most; the MLP weights 6,400 = C·4D·…
    with LargestTensor() as naive:  # the check can fail: the naive head does build [B, C, M, D]
        naive_z2_batched(head, f, head.anchors, head.anchor_mask).sum().backward()
    assert naive.largest >= B * C * M * D


def test_anchor_change_recomputes_derived_buffers():
    torch.manual_seed(0)
    a1, counts = ragged_anchors(seed=1)
    a2, _ = ragged_anchors(seed=2)
    head = LanguageGuidedHead(5, 16, a1, counts)
    other = LanguageGuidedHead(5, 16, a2, counts)
    f = torch.randn(2, 16)
    head(f)  # derived buffers computed for a1
    head.load_state_dict(other.state_dict())  # copies a2 into the buffers in place
    torch.testing.assert_close(head(f)[1], other(f)[1])
    head.set_anchors(a1, counts)
    torch.testing.assert_close(head(f)[1], naive_z2(head, f, a1, counts), rtol=1e-5, atol=1e-5)


# -- the model ------------------------------------------------------------------------------------
def test_forward_backward_with_tiny_tower():
    torch.manual_seed(0)
    model = tiny(4)
    x = torch.randn(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    model.train()
    z1, z2 = model(x)
    assert z1.shape == z2.shape == (6, 4)
    loss = F.cross_entropy(z1, y) + F.cross_entropy(z2, y)
    loss.backward()
    assert model.tower.proj.weight.grad.abs().sum() > 0
    assert model.head.w_k.weight.grad.abs().sum() > 0
    model.eval()
    scores = model(x)
    assert scores.shape == (6, 4)
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(6))


@pytest.mark.parametrize("alpha", [0.2, 0.7, 1.0])
def test_eval_scores_combine_the_two_softmaxes(alpha):
    torch.manual_seed(0)
    model = tiny(5, alpha=alpha).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        z1, z2 = model.head(model.tower(x))
        scores = model(x)
    p1 = torch.exp(z1.double()) / torch.exp(z1.double()).sum(1, keepdim=True)
    p2 = torch.exp(z2.double()) / torch.exp(z2.double()).sum(1, keepdim=True)
    expected = torch.log(alpha * p1 + (1 - alpha) * p2)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


def test_frozen_tower_stays_frozen():
    torch.manual_seed(0)
    model = tiny(4, freeze_tower=True)
    model.train()
    assert model.training and model.head.training and not model.tower.training
    assert all(not p.requires_grad for p in model.tower.parameters())
    tower_before = {k: v.clone() for k, v in model.tower.state_dict().items()}
    head_before = model.head.mlp[0].weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    z1, z2 = model(x)
    (F.cross_entropy(z1, y) + F.cross_entropy(z2, y)).backward()
    opt.step()
    assert all(p.grad is None for p in model.tower.parameters())
    for key, value in model.tower.state_dict().items():  # BN running statistics included
        assert torch.equal(value, tower_before[key]), key
    assert not torch.equal(model.head.mlp[0].weight, head_before)
    model.eval().train()
    assert not model.tower.training


def test_channels_last_and_bf16_autocast():
    model = tiny(3).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = model(x)
    assert z2.dtype == torch.float32 and torch.isfinite(z1.float()).all()
    (z1.float().sum() + z2.sum()).backward()


# -- anchors --------------------------------------------------------------------------------------
def test_anchor_files_pt_npz_npy_with_padding(tmp_path):
    anchors, counts = ragged_anchors(C=4, M=5, D=12)
    mask = torch.arange(5)[None] < counts[:4, None]
    counts = counts[:4]
    garbage = anchors.clone()
    garbage[~mask] = 99.0  # padding content of a .pt/.npz with counts must be ignored
    zero_padded = anchors * mask[..., None]
    torch.save({"anchors": garbage, "counts": counts}, tmp_path / "a.pt")
    np.savez(tmp_path / "a.npz", anchors=garbage.numpy(), counts=counts.numpy())
    np.save(tmp_path / "a.npy", zero_padded.numpy())

    x = torch.randn(2, 3, 16, 16)
    results = []
    for name in ("a.pt", "a.npz", "a.npy"):
        torch.manual_seed(0)
        model = tiny(4, anchors=str(tmp_path / name))
        assert model.tower.out_dim == 12  # D taken from the file
        assert torch.equal(model.head.anchor_mask, mask), name
        assert torch.equal(model.head.anchors, zero_padded), name
        results.append(model(x)[1])
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], results[2])
    torch.testing.assert_close(results[0], naive_z2(model.head, model.tower(x), anchors, counts))


def test_anchor_file_errors(tmp_path):
    with pytest.raises(LtBenchError, match="missing.pt"):
        tiny(4, anchors=str(tmp_path / "missing.pt"))
    torch.save({"anchors": torch.randn(3, 2, 8)}, tmp_path / "three.pt")
    with pytest.raises(LtBenchError, match="3 classes, the data set has 4"):
        tiny(4, anchors=str(tmp_path / "three.pt"))
    torch.save({"anchors": torch.randn(4, 2, 8), "counts": torch.tensor([1, 2, 3, 0])},
               tmp_path / "counts.pt")
    with pytest.raises(LtBenchError, match="1 to 2 sentences"):
        tiny(4, anchors=str(tmp_path / "counts.pt"))
    torch.save({"anchors": torch.randn(4, 2, 8)}, tmp_path / "four.pt")
    with pytest.raises(LtBenchError, match="dimension 8, the image tower gives 16"):
        tiny(4, anchors=str(tmp_path / "four.pt"), embed_dim=16)
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(LtBenchError, match="bad.pt.*could not be read"):
        tiny(4, anchors=str(tmp_path / "bad.pt"))


def test_max_sentences_truncates(tmp_path):
    torch.save({"anchors": torch.randn(2, 6, 8), "counts": torch.tensor([6, 2])},
               tmp_path / "a.pt")
    head = tiny(2, anchors=str(tmp_path / "a.pt"), max_sentences=4).head
    assert head.anchors.shape == (2, 4, 8)
    assert head.anchor_mask.sum(1).tolist() == [4, 2]


def test_random_anchors_are_fixed_by_the_seed():
    a = tiny(3, anchor_seed=5).head
    b = tiny(3, anchor_seed=5).head
    c = tiny(3, anchor_seed=6).head
    assert torch.equal(a.anchors, b.anchors) and not torch.equal(a.anchors, c.anchors)
    assert float(a.logit_scale) == pytest.approx(CLIP_LOGIT_SCALE)


# -- options and the optional open_clip dependency -------------------------------------------------
def test_unknown_option_is_named():
    with pytest.raises(LtBenchError, match=r"'frezze_tower'.*did you mean 'freeze_tower'"):
        tiny(3, frezze_tower=True)
    with pytest.raises(LtBenchError, match="tower='RN51'"):
        build_backbone("vl_ltr", 3, tower="RN51")
    with pytest.raises(LtBenchError, match="alpha"):
        tiny(3, alpha=1.5)


def test_real_tower_without_anchors_is_an_error_before_building(tmp_path):
    with pytest.raises(LtBenchError, match="no class text anchors"):
        vl_ltr(3, tower="RN50", tower_source="torchvision", weights=str(tmp_path / "w.pth"))


def test_random_tower_without_anchors_falls_back_to_random_anchors_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        model = vl_ltr(3, tower="RN50", tower_source="torchvision", embed_dim=32)
    assert any("random class anchors" in r.getMessage() for r in caplog.records)
    assert model.head.anchors.shape[0] == 3


def test_open_clip_import_guard(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    assert resolve_tower_source("RN50", "auto") == "torchvision"
    assert resolve_tower_source("tiny", "open_clip") == "tiny"
    with pytest.raises(LtBenchError, match=r"pip install 'lt-bench\[clip\]'"):
        vl_ltr(3, tower="RN50", tower_source="open_clip", class_names=["a", "b", "c"])


# -- the harness's side: the method's weights on both branches ---------------------------------------
def test_class_weights_apply_to_both_branches():
    counts = [50, 10, 5]
    criterion = lt_bench.build_method("inverse_frequency", counts)
    torch.manual_seed(0)
    model = tiny(3).train()
    y = torch.tensor([0, 1, 2, 2, 1])
    z1, z2 = model(torch.randn(5, 3, 16, 16))
    loss = criterion(z1, y) + criterion(z2, y, observe=False)

    inv = torch.tensor([1 / 50, 1 / 10, 1 / 5], dtype=torch.float64)
    w = inv * 3 / inv.sum()  # normalised to mean 1
    expected = 0.0
    for z in (z1.double(), z2.double()):
        ce = -(z.gather(1, y[:, None]).squeeze(1) - torch.log(torch.exp(z).sum(1)))
        expected = expected + (w[y] * ce).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    loss.backward()


def test_clip_checkpoint_reader_handles_torchscript_and_state_dicts(tmp_path):
    from lt_bench.backbones.vl_ltr import read_clip_checkpoint

    source = torch.nn.Linear(3, 2)
    torch.jit.script(source).save(str(tmp_path / "openai_style.pt"))
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()},
                "epoch": 3}, tmp_path / "trained.pt")
    for name in ("openai_style.pt", "trained.pt"):
        state = read_clip_checkpoint(tmp_path / name)
        assert state.keys() == {"weight", "bias"}, name
        assert torch.equal(state["weight"], source.weight), name
    with pytest.raises(LtBenchError, match="clip_missing.pt"):
        read_clip_checkpoint(tmp_path / "clip_missing.pt")

"""The comparator methods (LDAM-DRW, VS, IB, LADE, Meta-Weight-Net, DA, DA-DV), the look-ahead and
the meta set, against formulas written here from the official code's description
(/work/notes/comparators_spec.md): numpy float64 or plain torch, never the plugins' helpers."""

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_bench import LtBenchError, build_method
from lt_bench.backbones import build_backbone
from lt_bench.backbones.heads import CosineLinear, swap_head
from lt_bench.config import load_config
from lt_bench.data.longtail import hold_out_validation, select_subset
from lt_bench.method import declared_needs
from lt_bench.registry import get_registry
from lt_bench.run.lookahead import LookAhead
from lt_bench.run.loop import batch_loss

COUNTS = [500, 120, 30, 8]
C = len(COUNTS)
N = np.array(COUNTS, dtype=np.float64)


# -- independent helpers (numpy float64, written from the spec) ------------------------------------
def batch(seed=0, b=16, c=C, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * scale
    targets = torch.arange(b) % c  # every class present
    targets = targets[torch.randperm(b, generator=g)]
    return logits, targets


def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_ce(z, y):
    """Per-sample softmax cross-entropy, float64."""
    y = np.asarray(y)
    return -np_log_softmax(z)[np.arange(len(y)), y]


def np_logsumexp(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def effective_number_sum_c(n, beta=0.9999):
    raw = (1 - beta) / (1 - beta ** n)
    return raw * len(n) / raw.sum()


def to_np(t):
    return t.detach().double().numpy()


# ==================================================================================================
# 1. LDAM-DRW
# ==================================================================================================
def ldam_margins(n):
    return 0.5 * (n.min() / n) ** 0.25


def test_ldam_margins_hand_case():
    """m_j = 0.5·(n_min/n_j)^(1/4) reproduces the spec's CIFAR-10 IF100 margins."""
    n = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], dtype=np.float64)
    np.testing.assert_allclose(ldam_margins(n),
                               [.158, .180, .204, .232, .264, .300, .341, .387, .441, .500],
                               atol=1.5e-3)
    # and the method's per-sample loss uses exactly these: target one-hot, s = 30
    criterion = build_method("ldam_drw", n.astype(int).tolist(), start_epoch=2)
    z = torch.zeros(10, 10)
    y = torch.arange(10)
    # with all-zero cosines the loss is CE of (−30 m_y at the target, 0 elsewhere)
    s_m = 30 * ldam_margins(n)
    expected = s_m + np.log(np.exp(-s_m) + 9)  # −log(e^{−s m} / (e^{−s m} + 9))
    np.testing.assert_allclose(to_np(criterion.loss_fn(z, y)), expected, rtol=1e-5)


def test_ldam_drw_before_start_is_plain_mean_of_margin_ce():
    """Before start_epoch: mean_i CE(s·(z_i − m_{y_i}·onehot), y_i), m_j = 0.5(n_min/n_j)^¼, s=30."""
    z, y = batch(1, b=24, scale=0.4)
    z = z.clamp(-1, 1)  # cosines
    criterion = build_method("ldam_drw", COUNTS, start_epoch=2)
    m = ldam_margins(N)
    shifted = 30.0 * (to_np(z) - m[y.numpy()][:, None] * np.eye(C)[y.numpy()])
    expected = np_ce(shifted, y.numpy()).mean()
    assert criterion(z, y).item() == pytest.approx(expected, rel=1e-5)
    criterion.end_epoch()  # epoch 1 < start 2: still unweighted
    assert criterion(z, y).item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(criterion.class_weights.numpy(), np.ones(C))


def test_ldam_drw_after_start_is_torch_weighted_cross_entropy():
    """From start_epoch: Σ w_y ℓ / Σ w_y with w = effective number (β=0.9999) summing to C, which
    is what F.cross_entropy(s·(z − m), y, weight=w) computes."""
    z, y = batch(2, b=24, scale=0.4)
    z = z.clamp(-1, 1)
    criterion = build_method("ldam_drw", COUNTS, start_epoch=2)
    criterion.end_epoch()
    criterion.end_epoch()
    w = effective_number_sum_c(N)
    assert w.sum() == pytest.approx(C)
    np.testing.assert_allclose(criterion.class_weights.double().numpy(), w, rtol=1e-6)
    m = torch.tensor(ldam_margins(N), dtype=torch.float64)
    adjusted = 30.0 * (z.double() - F.one_hot(y, C).double() * m[y][:, None])
    truth = F.cross_entropy(adjusted, y, weight=torch.tensor(w)).item()
    assert criterion(z, y).item() == pytest.approx(truth, rel=1e-5)
    # and it differs from the plain mean (the weights matter): not a vacuous comparison
    assert abs(truth - F.cross_entropy(adjusted, y).item()) > 1e-2 * abs(truth)
    # the global scale of w cancels (weighted mean, not mean of weighted)
    hand = (w[y.numpy()] * np_ce(to_np(adjusted), y.numpy())).sum() / w[y.numpy()].sum()
    assert criterion(z, y).item() == pytest.approx(hand, rel=1e-5)


def test_ldam_drw_cosine_head_on_resnet32():
    """head == 'cosine'; swap_head replaces fc by a layer whose logits are
    normalize(h) @ normalize(W).T, all in [-1, 1], unit-norm class vectors at init."""
    assert build_method("ldam_drw", COUNTS).head == "cosine"
    torch.manual_seed(0)
    model = build_backbone("resnet32", 10)
    old_fc = model.fc
    swap_head(model, "cosine", "resnet32")
    assert model.fc is not old_fc and isinstance(model.fc, CosineLinear)
    assert not isinstance(model.fc, torch.nn.Linear)
    w = model.fc.weight.detach().double()
    assert tuple(w.shape) == (10, 64)
    np.testing.assert_allclose(w.norm(dim=1).numpy(), np.ones(10), rtol=1e-5)
    model.eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, h = model(x, return_features=True)
        plain = model(x)
    h = h.double()
    expected = (h / h.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    np.testing.assert_allclose(logits.double().numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(plain.numpy(), logits.numpy(), atol=1e-6)
    assert logits.abs().max().item() <= 1 + 1e-6
    # a cosine is unchanged by rescaling the class vector (a plain linear layer's would double)
    with torch.no_grad():
        model.fc.weight.mul_(2.0)
        again = model(x)
    np.testing.assert_allclose(again.numpy(), logits.numpy(), atol=1e-5)


def test_swap_head_refuses_a_model_without_linear_fc():
    """A backbone without a linear 'fc' cannot get a cosine head: a clear error."""
    with pytest.raises(LtBenchError, match="fc"):
        swap_head(torch.nn.Sequential(torch.nn.Linear(4, 2)), "cosine", "tiny")


def test_ldam_drw_is_never_plain_ce():
    """LDAM's margin loss differs from CE from epoch 0: no plain trunk to fork from."""
    assert build_method("ldam_drw", COUNTS, start_epoch=2).plain_epochs == 0


# ==================================================================================================
# 2. VS
# ==================================================================================================
def vs_expected(z, y, gamma, tau):
    delta = (N / N.max()) ** gamma
    iota = tau * np.log(N / N.sum())
    return np_ce(to_np(z) * delta + iota, y.numpy()).mean()


@pytest.mark.parametrize("options,gamma,tau", [
    ({}, 0.2, 1.2),  # the README's CIFAR-10-LT defaults
    ({"gamma": 0.5, "tau": 0.3}, 0.5, 0.3),
    ({"gamma": 0.3, "tau": 0.0}, 0.3, 0.0),  # CDT
])
def test_vs_loss_matches_formula(options, gamma, tau):
    """mean_i CE(z_ij·(n_j/n_max)^γ + τ·log π_j, y_i), every class's logit adjusted."""
    z, y = batch(3, b=20)
    loss = build_method("vs", COUNTS, **options)(z, y).item()
    assert loss == pytest.approx(vs_expected(z, y, gamma, tau), rel=1e-5)
    # the defaults are really γ=0.2, τ=1.2 (another pair gives another value)
    if not options:
        assert abs(loss - vs_expected(z, y, 0.3, 1.0)) > 1e-3


@pytest.mark.parametrize("tau", [1.2, 0.5])
def test_vs_with_gamma_zero_is_logit_adjusted(tau):
    """γ = 0: Δ = 1, the VS loss is the logit-adjusted loss with the same τ."""
    z, y = batch(4, b=20)
    vs = build_method("vs", COUNTS, gamma=0.0, tau=tau)(z, y).item()
    la = build_method("logit_adjusted", COUNTS, tau=tau)(z, y).item()
    assert vs == pytest.approx(la, rel=1e-6)


# ==================================================================================================
# 3. IB
# ==================================================================================================
def ib_expected_torch(z, y, h, n, alpha=1000.0, eps=1e-3):
    """(1/B) Σ w_y ℓ α / (‖softmax(z) − onehot‖₁ ‖h‖₁ + ε), w = 1/n summing to C (float64)."""
    n = torch.as_tensor(n, dtype=torch.float64)
    w = (1.0 / n) * len(n) / (1.0 / n).sum()
    log_p = z.log_softmax(dim=1)
    ell = -log_p.gather(1, y[:, None]).squeeze(1)
    g = (log_p.exp() - F.one_hot(y, z.shape[1]).to(z.dtype)).abs().sum(dim=1)
    hn = h.abs().sum(dim=1)
    return (w[y] * ell * alpha / (g * hn + eps)).mean()


def ib_features(seed, b, d=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, d, generator=g) * 0.5  # post-ReLU, non-negative


def test_ib_declares_features_and_plain_epochs_equal_start():
    """IB needs the penultimate features and trains plain CE until its start."""
    criterion = build_method("ib", COUNTS, start_epoch=3)
    assert criterion.needs_features is True
    assert criterion.plain_epochs == 3


def test_ib_before_start_is_plain_mean_ce_whatever_the_features():
    """Before the start: mean CE, the features have no effect."""
    z, y = batch(5)
    criterion = build_method("ib", COUNTS, start_epoch=2)
    expected = np_ce(to_np(z), y.numpy()).mean()
    for seed in (0, 1):
        loss = criterion(z, y, features=ib_features(seed, len(y)) * (seed + 1))
        assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("options,alpha", [({}, 1000.0), ({"alpha": 10.0}, 10.0)])
def test_ib_after_start_matches_formula(options, alpha):
    """From the start: (1/B) Σ w_y ℓ_i α/(g_i h_i + ε), w inverse frequency summing to C."""
    z, y = batch(6)
    h = ib_features(6, len(y))
    criterion = build_method("ib", COUNTS, start_epoch=1, **options)
    criterion.end_epoch()
    w = (1 / N) * C / (1 / N).sum()
    np.testing.assert_allclose(criterion.class_weights.double().numpy(), w, rtol=1e-6)
    # numpy float64 version of the formula
    p = np_softmax(to_np(z))
    g = np.abs(p - np.eye(C)[y.numpy()]).sum(axis=1)
    hn = np.abs(to_np(h)).sum(axis=1)
    expected = np.mean(w[y.numpy()] * np_ce(to_np(z), y.numpy()) * alpha / (g * hn + 1e-3))
    assert criterion(z, y, features=h).item() == pytest.approx(expected, rel=1e-5)
    # a mean over B, not a weighted mean: differs from Σ w ib ℓ / Σ w ib
    ib = alpha / (g * hn + 1e-3)
    weighted_mean = (w[y.numpy()] * ib * np_ce(to_np(z), y.numpy())).sum() / (w[y.numpy()] * ib).sum()
    assert abs(expected - weighted_mean) > 1e-3 * abs(expected)


def test_ib_gradient_flows_through_the_influence():
    """Nothing is detached: autograd gradients w.r.t. logits and features equal those of the
    formula differentiated as a whole (a detached influence would give other gradients)."""
    z, y = batch(7, b=12)
    h = ib_features(7, len(y))
    criterion = build_method("ib", COUNTS, start_epoch=0)
    z1, h1 = z.clone().requires_grad_(), h.clone().requires_grad_()
    criterion(z1, y, features=h1).backward()
    z2, h2 = z.double().requires_grad_(), h.double().requires_grad_()
    ib_expected_torch(z2, y, h2, COUNTS).backward()
    assert h1.grad is not None and h1.grad.abs().sum().item() > 0
    np.testing.assert_allclose(to_np(h1.grad), to_np(h2.grad), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(to_np(z1.grad), to_np(z2.grad), rtol=1e-4, atol=1e-6)
    # the detached variant differs (so the comparison above can fail)
    z3 = z.double().requires_grad_()
    n = torch.tensor(N)
    w = (1 / n) * C / (1 / n).sum()
    with torch.no_grad():
        g = (z.double().softmax(1) - F.one_hot(y, C).double()).abs().sum(1)
        factor = w[y] * 1000.0 / (g * h.double().abs().sum(1) + 1e-3)
    (factor * F.cross_entropy(z3, y, reduction="none")).mean().backward()
    assert not np.allclose(to_np(z3.grad), to_np(z2.grad), rtol=1e-3, atol=1e-6)


def test_ib_start_option_moves_the_start():
    """ib_start=k: plain CE for epochs < k, IB from epoch k; plain_epochs == k."""
    z, y = batch(8)
    h = ib_features(8, len(y))
    criterion = build_method("ib", COUNTS, start_epoch=5, ib_start=1)
    assert criterion.start_epoch == 1 and criterion.plain_epochs == 1
    plain = np_ce(to_np(z), y.numpy()).mean()
    assert criterion(z, y, features=h).item() == pytest.approx(plain, rel=1e-5)
    criterion.end_epoch()
    ib = ib_expected_torch(z.double(), y, h.double(), COUNTS).item()
    assert criterion(z, y, features=h).item() == pytest.approx(ib, rel=1e-5)
    assert abs(ib - plain) > 1e-2


def test_ib_without_features_is_a_clear_error():
    """Calling IB without features raises LtBenchError naming the features."""
    z, y = batch(9)
    criterion = build_method("ib", COUNTS)
    with pytest.raises(LtBenchError, match="features"):
        criterion(z, y)


def test_batch_loss_gives_ib_the_backbone_penultimate_features():
    """batch_loss passes IB the backbone's penultimate features: equals the IB formula on
    model(x, return_features=True)."""
    torch.manual_seed(0)
    model = build_backbone("resnet32", C).eval()
    criterion = build_method("ib", COUNTS, start_epoch=0)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        loss = batch_loss(model, criterion, x, y, None, 0.1)
        z, h = model(x, return_features=True)
    assert loss.item() == pytest.approx(
        ib_expected_torch(z.double(), y, h.double(), COUNTS).item(), rel=1e-4)


# ==================================================================================================
# 4. LADE
# ==================================================================================================
def lade_expected(z, y, alpha=0.1, lam=0.1):
    """L_PCE + α L_LADER, float64, from the spec (T1, T2 log-mean-exp, ReMINE λ, π weights)."""
    z, y = to_np(z), y.numpy()
    b, c = z.shape
    pi = N / N.sum()
    pce = np_ce(z + np.log(pi + 1e-9), y).mean()
    est = np.zeros(c)
    for k in range(c):
        own = z[y == k, k]
        t1 = own.sum() / (len(own) + 1e-8)
        t2 = np_logsumexp(z[:, k] - np.log(pi[k] + 1e-9) + np.log(1.0 / c + 1e-9), 0) - np.log(b)
        est[k] = t1 - t2 - lam * t2 ** 2
    return pce + alpha * -(pi * est).sum()


@pytest.mark.parametrize("options,alpha,lam", [
    ({}, 0.1, 0.1),
    ({"alpha": 0.5, "remine_lambda": 0.01}, 0.5, 0.01),
])
def test_lade_matches_formula(options, alpha, lam):
    """mean CE(z + log π) + α·(−Σ_c π_c (T1_c − T2_c − λ T2_c²))."""
    z, y = batch(10, b=24)
    loss = build_method("lade", COUNTS, **options)(z, y).item()
    assert loss == pytest.approx(lade_expected(z, y, alpha, lam), rel=1e-5)
    # the regulariser contributes (not a vacuous check of the balanced softmax alone)
    assert abs(lade_expected(z, y, alpha, lam) - lade_expected(z, y, 0.0, lam)) > 1e-3


def test_lade_with_an_absent_class_is_finite():
    """A class missing from the batch has T1 = 0 and still its T2 term; the loss is finite."""
    z, _ = batch(11, b=12)
    y = torch.tensor([0, 1, 2] * 4)  # class 3 absent
    loss = build_method("lade", COUNTS)(z, y)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(lade_expected(z, y), rel=1e-5)


def test_lade_alpha_zero_is_balanced_softmax():
    """α = 0 leaves the prior-adjusted CE: the balanced softmax."""
    z, y = batch(12, b=20)
    lade = build_method("lade", COUNTS, alpha=0.0)(z, y).item()
    assert lade == pytest.approx(build_method("balanced_softmax", COUNTS)(z, y).item(), rel=1e-6)
    assert lade == pytest.approx(np_ce(to_np(z) + np.log(N / N.sum()), y.numpy()).mean(),
                                 rel=1e-5)


# ==================================================================================================
# 5. LookAhead
# ==================================================================================================
def tiny_linear(seed=0, d=12, c=C):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, c))


def images(seed, b, shape=(3, 2, 2)):
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


def labels(seed, b, c=C):
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(b) % c)[torch.randperm(b, generator=g)]


def ce_loss_fn(logits, targets):
    return F.cross_entropy(logits.float(), targets, reduction="none")


def test_virtual_step_is_sgd_step_hand_computed():
    """virtual_step(loss, lr) = θ − lr·∇θ loss, against autograd on an explicit parameter copy;
    lr defaults to the step's lr; the result stays differentiable in what the loss depends on."""
    model = tiny_linear(0)
    x, y = images(1, 10), labels(1, 10)
    c = torch.linspace(0.2, 2.0, 10, requires_grad=True)  # per-sample weights in the loss
    step = LookAhead(model, x, y, ce_loss_fn, iter(()), lr=0.7)
    new = step.virtual_step((c * step.per_sample_losses()).sum(), 0.3)
    W = model[1].weight.detach().clone().requires_grad_()
    b = model[1].bias.detach().clone().requires_grad_()
    ell = -torch.log_softmax(x.flatten(1) @ W.T + b, dim=1)[torch.arange(10), y]
    gW, gb = torch.autograd.grad((c.detach() * ell).sum(), [W, b])
    assert set(new) == {"1.weight", "1.bias"}
    torch.testing.assert_close(new["1.weight"], W.detach() - 0.3 * gW, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new["1.bias"], b.detach() - 0.3 * gb, rtol=1e-5, atol=1e-6)
    # default lr: the step's own
    step2 = LookAhead(model, x, y, ce_loss_fn, iter(()), lr=0.7)
    new2 = step2.virtual_step((c.detach() * step2.per_sample_losses()).sum())
    torch.testing.assert_close(new2["1.bias"], b.detach() - 0.7 * gb, rtol=1e-5, atol=1e-6)
    # differentiable in c: d⟨θ'_W, U⟩/dc_i = −lr·⟨∇_W ℓ_i, U⟩ with ∇_W ℓ_i = (p_i − e_{y_i}) x_i^T
    u = torch.randn(C, 12, generator=torch.Generator().manual_seed(3))
    (dc,) = torch.autograd.grad((new["1.weight"] * u).sum(), c)
    p = torch.softmax(x.flatten(1) @ W.detach().T + b.detach(), dim=1)
    gi = p - F.one_hot(y, C).float()
    expected = -0.3 * torch.einsum("ic,cd,id->i", gi, u, x.flatten(1))
    torch.testing.assert_close(dc, expected, rtol=1e-4, atol=1e-6)
    # the real parameters are untouched
    torch.testing.assert_close(model[1].weight, W.detach())


def test_meta_loss_equals_ce_of_a_copy_set_to_the_new_parameters():
    """meta_loss(θ') = mean CE of the meta batch under a deep copy of the model set to θ'."""
    model = tiny_linear(1)
    x, y = images(2, 8), labels(2, 8)
    xm, ym = images(3, 8), labels(3, 8)
    step = LookAhead(model, x, y, ce_loss_fn, iter([(xm, ym)]), lr=0.5)
    new = step.virtual_step(step.per_sample_losses().sum())
    got = step.meta_loss(new)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin[1].weight.copy_(new["1.weight"])
        twin[1].bias.copy_(new["1.bias"])
        expected = F.cross_entropy(twin(xm), ym)
        before = F.cross_entropy(model(xm), ym)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(got.item() - before.item()) > 1e-4  # θ' differs from θ


def test_look_ahead_leaves_model_parameters_and_batchnorm_stats_unchanged():
    """Params and BN running stats are those of before; the look-ahead forward is the train-mode
    forward of a copy (batch statistics)."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6),
                                torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    model.train()
    with torch.no_grad():  # non-trivial running stats
        model[2].running_mean.uniform_(-1, 1)
        model[2].running_var.uniform_(0.5, 2)
    before = copy.deepcopy(model.state_dict())
    x, y = images(4, 8), labels(4, 8, 3)
    xm, ym = images(5, 6), labels(5, 6, 3)
    twin = copy.deepcopy(model)
    step = LookAhead(model, x, y, ce_loss_fn, iter([(xm, ym)]), lr=0.5)
    losses = step.per_sample_losses()
    torch.testing.assert_close(losses, F.cross_entropy(twin(x), y, reduction="none"))
    c = torch.ones(8, requires_grad=True)
    meta = step.meta_loss(step.virtual_step((c * losses).sum()))
    meta.backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    after = model.state_dict()
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0, msg=name)
    assert model[2].num_batches_tracked.item() == before["2.num_batches_tracked"].item()


# ==================================================================================================
# 6. DA (Jamal et al.) and DA-DV
# ==================================================================================================
def da_expected(model, x, y, xm, ym, alpha_y, lr, eps_step=0.01):
    """Closed form for a linear model z = Wx + b, float64:
    θ' = θ − η Σ α_i ∇ℓ_i(θ); ∂L_meta/∂ε_i = −η ⟨∇L_meta(θ'), ∇ℓ_i(θ)⟩ (exact: θ' is linear in ε);
    w_i = α_i − eps_step·∂L_meta/∂ε_i. Returns (w, per-sample ℓ, ∇_W ℓ_i, ∇_b ℓ_i)."""
    W = to_np(model[1].weight)
    b = to_np(model[1].bias)
    X, Xm = to_np(x.flatten(1)), to_np(xm.flatten(1))
    y, ym = y.numpy(), ym.numpy()
    c = W.shape[0]
    G = np_softmax(X @ W.T + b) - np.eye(c)[y]           # ∂ℓ_i/∂z_i, [B, C]
    gW_i = G[:, :, None] * X[:, None, :]                  # ∇_W ℓ_i, [B, C, D]
    W1 = W - lr * np.einsum("i,icd->cd", alpha_y, gW_i)
    b1 = b - lr * (alpha_y[:, None] * G).sum(0)
    Gm = (np_softmax(Xm @ W1.T + b1) - np.eye(c)[ym]) / len(ym)
    meta_W, meta_b = Gm.T @ Xm, Gm.sum(0)
    grad_eps = -lr * (np.einsum("cd,icd->i", meta_W, gW_i) + G @ meta_b)
    return alpha_y - eps_step * grad_eps, np_ce(X @ W.T + b, y), gW_i, G


def test_da_schedule_and_declarations():
    """No look-ahead before start_epoch, look-ahead from it; 10 meta images per class; plain CE
    (uniform weights) before the start, so plain_epochs == start_epoch."""
    criterion = build_method("da", COUNTS, start_epoch=2)
    assert criterion.meta_per_class == 10
    assert criterion.plain_epochs == 2
    z, y = batch(13)
    for epoch in range(2):
        assert criterion.epoch == epoch and criterion.wants_look_ahead() is False
        assert criterion.looks_ahead is False
        assert criterion(z, y).item() == pytest.approx(np_ce(to_np(z), y.numpy()).mean(),
                                                       rel=1e-5)
        criterion.end_epoch()
    assert criterion.wants_look_ahead() is True and criterion.looks_ahead is True
    np.testing.assert_allclose(criterion.class_weights.double().numpy(),
                               effective_number_sum_c(N), rtol=1e-6)


@pytest.mark.parametrize("options,eps_step", [({}, 0.01), ({"eps_step": 1.0}, 1.0)])
def test_da_weights_are_alpha_minus_step_times_meta_gradient(options, eps_step):
    """look_ahead returns α_y − eps_step·∂L_meta/∂ε (closed form for a linear model), α the
    effective number summing to C; no clamp, no normalisation."""
    model = tiny_linear(3)
    x, y = images(6, 16) * 2, labels(6, 16)
    xm, ym = images(7, 8) * 2, labels(7, 8)
    criterion = build_method("da", COUNTS, start_epoch=0, **options)
    lr = 0.5
    w = criterion.look_ahead(LookAhead(model, x, y, criterion.loss_fn, iter([(xm, ym)]), lr))
    alpha_y = effective_number_sum_c(N)[y.numpy()]
    expected, _, _, _ = da_expected(model, x, y, xm, ym, alpha_y, lr, eps_step)
    # the ε part is small next to α: compare it on its own so the check is sensitive
    np.testing.assert_allclose(to_np(w) - alpha_y, expected - alpha_y, rtol=2e-3, atol=1e-7)
    assert np.abs(expected - alpha_y).max() > 1e-3 * eps_step  # a non-trivial ε
    # some weights go below α, some above: ε is signed, no clamp
    assert (expected < alpha_y).any() and (expected > alpha_y).any()


def test_da_batch_loss_is_mean_of_constant_weights_times_ce():
    """batch_loss from the start epoch: (1/B) Σ w_i ℓ_i with w from the look-ahead at the step's
    lr, and w held constant for the gradient (∇ = (1/B) Σ w_i ∇ℓ_i)."""
    model = tiny_linear(4)
    x, y = images(8, 16) * 2, labels(8, 16)
    xm, ym = images(9, 8) * 2, labels(9, 8)
    criterion = build_method("da", COUNTS, start_epoch=1)
    criterion.end_epoch()
    lr = 0.4
    w, ell, gW_i, G = da_expected(model, x, y, xm, ym, effective_number_sum_c(N)[y.numpy()], lr)
    loss = batch_loss(model, criterion, x, y, iter([(xm, ym)]), lr)
    assert loss.item() == pytest.approx(np.mean(w * ell), rel=1e-5)
    loss.backward()
    np.testing.assert_allclose(to_np(model[1].weight.grad),
                               np.einsum("i,icd->cd", w, gW_i) / len(w), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(to_np(model[1].bias.grad), (w[:, None] * G).mean(0),
                               rtol=1e-4, atol=1e-7)


def test_da_dv_looks_ahead_with_current_dv_weights():
    """da_dv: the same look-ahead with α = the current DV class weights (not uniform, not the
    effective number)."""
    criterion = build_method("da_dv", COUNTS, start_epoch=1)
    assert criterion.meta_per_class == 10
    assert criterion.wants_look_ahead() is False
    z = torch.randn(64, C, generator=torch.Generator().manual_seed(14)) * torch.tensor(
        [1.0, 2.0, 0.5, 3.0])
    criterion.train()
    criterion(z, torch.arange(64) % C)  # gathers DV statistics for the epoch before the start
    criterion.end_epoch()
    assert criterion.wants_look_ahead() is True
    alpha = criterion.class_weights.double().numpy()
    assert not np.allclose(alpha, alpha[0], rtol=1e-3)
    assert not np.allclose(alpha, effective_number_sum_c(N), rtol=1e-2)
    model = tiny_linear(5)
    x, y = images(10, 16) * 2, labels(10, 16)
    xm, ym = images(11, 8) * 2, labels(11, 8)
    w = criterion.look_ahead(LookAhead(model, x, y, criterion.loss_fn, iter([(xm, ym)]), 0.5))
    alpha_y = alpha[y.numpy()]
    expected, _, _, _ = da_expected(model, x, y, xm, ym, alpha_y, 0.5)
    np.testing.assert_allclose(to_np(w) - alpha_y, expected - alpha_y, rtol=2e-3, atol=1e-7)


# ==================================================================================================
# 7. Meta-Weight-Net
# ==================================================================================================
def mwn_setup(seed=0, **options):
    torch.manual_seed(seed)
    criterion = build_method("meta_weight_net", COUNTS, **options)
    model = tiny_linear(seed + 10)
    x, y = images(seed + 20, 12) * 2, labels(seed + 20, 12)
    xm, ym = images(seed + 30, 8) * 2, labels(seed + 30, 8)
    return criterion, model, x, y, xm, ym


def net_params(criterion):
    return [p.detach().clone() for p in criterion.net.parameters()]


def v_by_hand(params, ell):
    """V(ℓ) = sigmoid(W2 relu(W1 ℓ + b1) + b2), the 1→100→1 MLP."""
    w1, b1, w2, b2 = params
    hidden = torch.relu(ell[:, None] * w1[:, 0][None, :] + b1)
    return torch.sigmoid(hidden @ w2[0] + b2[0])


def test_mwn_net_shape_and_declarations():
    """V is a 1→100→1 MLP; 10 meta images per class; the look-ahead runs from start_epoch."""
    criterion = build_method("meta_weight_net", COUNTS, start_epoch=1)
    shapes = [tuple(p.shape) for p in criterion.net.parameters()]
    assert shapes == [(100, 1), (100,), (1, 100), (1,)]
    assert criterion.meta_per_class == 10
    assert criterion.wants_look_ahead() is False and criterion.plain_epochs == 1
    criterion.end_epoch()
    assert criterion.wants_look_ahead() is True
    # V's optimiser, as the class-imbalance script: SGD lr 1e-5, momentum 0.9, Nesterov, wd 5e-4
    group = criterion.net_optimizer.param_groups[0]
    assert isinstance(criterion.net_optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        1e-5, 0.9, True, 5e-4)


def test_mwn_look_ahead_updates_net_not_model_and_weights_from_updated_net():
    """After look_ahead: V changed, the model did not; w = B·v/Σv with v = V'(ℓ) of the updated
    V (recomputed here by hand); w > 0 with mean 1."""
    criterion, model, x, y, xm, ym = mwn_setup(0)
    before_net = net_params(criterion)
    before_model = copy.deepcopy(model.state_dict())
    w = criterion.look_ahead(LookAhead(model, x, y, criterion.loss_fn, iter([(xm, ym)]), 0.5))
    after_net = net_params(criterion)
    assert any(not torch.equal(a, b) for a, b in zip(after_net, before_net))
    for name, value in before_model.items():
        assert torch.equal(model.state_dict()[name], value), name
    # the meta backward reaches V only: nothing accumulates into the model's gradients
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        ell = F.cross_entropy(model(x).double(), y, reduction="none")
        v = v_by_hand([p.double() for p in after_net], ell)
        v_old = v_by_hand([p.double() for p in before_net], ell)
    expected = len(v) * v / v.sum()
    np.testing.assert_allclose(to_np(w), expected.numpy(), rtol=1e-5)
    assert (w > 0).all()
    assert w.mean().item() == pytest.approx(1.0, rel=1e-5)
    # weights of the old V differ (w is from the updated net); meta_lr makes it tiny, so relative
    assert not torch.equal(v, v_old)


def test_mwn_net_update_is_nesterov_sgd_on_the_meta_gradient():
    """V's step: SGD(lr, momentum 0.9, Nesterov, wd 5e-4) on ∂L_meta(θ')/∂V with
    θ' = θ − η ∇θ Σ_i (v_i/Σv) ℓ_i (ℓ not detached), all by hand with autograd on copies."""
    meta_lr = 0.5
    criterion, model, x, y, xm, ym = mwn_setup(1, meta_lr=meta_lr)
    eta = 0.5
    net0 = [p.clone().double().requires_grad_() for p in net_params(criterion)]
    W = model[1].weight.detach().double().requires_grad_()
    b = model[1].bias.detach().double().requires_grad_()
    ell = F.cross_entropy(x.flatten(1).double() @ W.T + b, y, reduction="none")
    v = v_by_hand(net0, ell)
    gW, gb = torch.autograd.grad(((v / v.sum()) * ell).sum(), [W, b], create_graph=True)
    W1, b1 = W - eta * gW, b - eta * gb
    meta = F.cross_entropy(xm.flatten(1).double() @ W1.T + b1, ym)
    grads = torch.autograd.grad(meta, net0)
    expected = []
    for p, g in zip(net0, grads):
        d = g + 5e-4 * p.detach()
        buf = d  # first step: the momentum buffer is the gradient
        expected.append(p.detach() - meta_lr * (d + 0.9 * buf))
    criterion.look_ahead(LookAhead(model, x, y, criterion.loss_fn, iter([(xm, ym)]), eta))
    for got, want, p0 in zip(criterion.net.parameters(), expected, net0):
        # compare the update (p − p0), so a no-op or a wrong step cannot pass; atol: float32
        # spacing of the parameters themselves
        np.testing.assert_allclose(to_np(got) - to_np(p0), (want - p0.detach()).numpy(),
                                   rtol=2e-3, atol=2e-7)
    assert max((w - p.detach()).abs().max().item() for w, p in zip(expected, net0)) > 1e-4


def test_mwn_state_dict_round_trip_resumes_exactly():
    """A fresh MWN loaded with state_dict() (through torch.save / weights_only load, as a
    checkpoint) has V's parameters and momentum buffers, and its next step equals the original's."""
    criterion, model, x, y, xm, ym = mwn_setup(2, meta_lr=0.05)
    criterion.look_ahead(LookAhead(model, x, y, criterion.loss_fn, iter([(xm, ym)]), 0.5))
    buffer = io.BytesIO()
    torch.save(criterion.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(99)  # another initialisation of V
    fresh = build_method("meta_weight_net", COUNTS, meta_lr=0.05)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.net.parameters(),
                                                     criterion.net.parameters()))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(fresh.net.parameters(), criterion.net.parameters()):
        assert torch.equal(a, b)
    for pa, pb in zip(fresh.net.parameters(), criterion.net.parameters()):
        ma = fresh.net_optimizer.state[pa].get("momentum_buffer")
        mb = criterion.net_optimizer.state[pb].get("momentum_buffer")
        assert ma is not None and torch.equal(ma, mb)
        assert mb.abs().sum() > 0
    # the next step is the same on both
    x2, y2 = images(40, 12) * 2, labels(40, 12)
    w_a = fresh.look_ahead(LookAhead(model, x2, y2, fresh.loss_fn, iter([(xm, ym)]), 0.5))
    w_b = criterion.look_ahead(LookAhead(model, x2, y2, criterion.loss_fn, iter([(xm, ym)]), 0.5))
    torch.testing.assert_close(w_a, w_b, rtol=0, atol=0)
    for a, b in zip(fresh.net.parameters(), criterion.net.parameters()):
        assert torch.equal(a, b)


# ==================================================================================================
# 8. declared needs
# ==================================================================================================
def needs(name):
    return declared_needs(get_registry().get("methods", name).factory)


def test_declared_needs():
    """ib: features; ldam_drw: cosine head; da / meta_weight_net: meta set and look-ahead;
    ce: nothing."""
    assert needs("ce") == []
    assert any("features" in s for s in needs("ib"))
    assert any("cosine" in s for s in needs("ldam_drw"))
    assert not any("features" in s for s in needs("ldam_drw"))
    for name in ("da", "meta_weight_net", "da_dv"):
        text = " | ".join(needs(name))
        assert "meta set (10 images per class" in text, name
        assert "look-ahead" in text, name
        assert "features" not in text and "cosine" not in text, name
    assert not any("meta" in s or "look-ahead" in s for s in needs("ib") + needs("ldam_drw"))


# ==================================================================================================
# 9. the meta set in the data and the config
# ==================================================================================================
def test_meta_set_held_out_after_validation():
    """Meta drawn after the validation set: disjoint from it and from training, per_class per
    class; a class that keeps all its images gives up val + meta training images; a tail class
    that left images out keeps its training images."""
    per_class_total = [30, 30, 30, 30]
    labels_t = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class_total)])
    labels_t = labels_t[torch.randperm(len(labels_t), generator=torch.Generator().manual_seed(0))]
    lt = [30, 28, 8, 5]  # class 0 keeps all; class 1 leaves only 2 out
    keep = select_subset(labels_t, lt, 3)
    classes = ["a", "b", "c", "d"]
    train1, val = hold_out_validation(labels_t, keep, 3, 3, classes, "tiny")
    train2, meta = hold_out_validation(labels_t, train1, 2, 3, classes, "tiny", taken=val,
                                       key="data.meta_per_class", salt=104729)
    s_keep, s_val, s_meta = set(keep.tolist()), set(val.tolist()), set(meta.tolist())
    s_train = set(train2.tolist())
    assert not s_meta & s_val and not s_meta & s_train and not s_val & s_train
    assert s_train <= s_keep
    assert torch.bincount(labels_t[meta], minlength=4).tolist() == [2, 2, 2, 2]
    assert torch.bincount(labels_t[val], minlength=4).tolist() == [3, 3, 3, 3]
    counts = torch.bincount(labels_t[train2], minlength=4).tolist()
    # class 0: no image left out, so both held-out sets come from training: 30 − 3 − 2
    # class 1: 2 left out go to val, val's third and meta's 2 from training: 28 − 1 − 2
    # classes 2, 3: enough left-out images, training untouched
    assert counts == [25, 25, 8, 5]
    assert s_keep - s_train == {i for i in s_keep if i in s_val or i in s_meta}
    # a meta set too large for a class is refused, naming the key
    with pytest.raises(LtBenchError, match="data.meta_per_class"):
        hold_out_validation(labels_t, train1, 27, 3, classes, "tiny", taken=val,
                            key="data.meta_per_class", salt=104729)


def test_meta_per_class_filled_from_the_method():
    """method=da / meta_weight_net gets data.meta_per_class=10; an explicit value wins; ce: 0."""
    assert load_config([], ["method=da"]).data.meta_per_class == 10
    assert load_config([], ["method=meta_weight_net"]).data.meta_per_class == 10
    assert load_config([], ["method=da_dv"]).data.meta_per_class == 10
    assert load_config([], ["method=da", "data.meta_per_class=5"]).data.meta_per_class == 5
    assert load_config([], ["method=ce"]).data.meta_per_class == 0


def test_mwn_weight_normalisation_skips_an_all_zero_batch_without_nan_gradients():
    """The official code divides the batch's weights by their sum unless the sum is 0; that case
    must give the weights back unchanged and a finite gradient (0/0 in backward would poison
    the weight net's update)."""
    from lt_bench_plugins.meta_weight_net import normalised

    v = torch.tensor([1.0, 3.0], requires_grad=True)
    assert torch.allclose(normalised(v), torch.tensor([0.25, 0.75]))
    zero = torch.zeros(4, requires_grad=True)
    out = normalised(zero)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.zeros(4)) and torch.isfinite(zero.grad).all()

"""Faithful reproduction of Zheng & Ng's Table 1: ``convention="authors"`` against the authors'
CIFAR code written here in numpy, and the epochs of the zheng_ng_code protocol against a table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_bench import LtBenchError, build_method

COUNTS = [120, 80, 60, 45, 20, 8]


def make_epoch(counts, seed=0):
    """One epoch of logits [N, C] (float64) and targets, each class its own correlated spread."""
    rng = np.random.default_rng(seed)
    c = len(counts)
    t = rng.permutation(np.repeat(np.arange(c), counts))
    mix = rng.normal(size=(c, c)) / np.sqrt(c)
    spread = rng.uniform(0.3, 3.0, size=(c, c))
    x = (rng.normal(size=(len(t), c)) @ mix) * spread[t] + 2.0 * np.eye(c)[t]
    return x, t


def run_epoch(method, x, t, batch=50):
    method.train()
    logits, targets = torch.as_tensor(x), torch.as_tensor(t)
    for i in range(0, len(t), batch):
        method(logits[i:i + batch], targets[i:i + batch])
    method.end_epoch()
    return method.class_weights.double().numpy()


#: the round-off eigenvalue of a direction n samples do not span, as a fraction of the class's
#: largest (sklearn's float32 PCA gives 1e-16 to 6e-14; lt_bench takes 1e-14)
ROUND_OFF = 1e-14


def authors_log_radius(xc, k, kind, components):
    """log r of one class as the authors' code computes it: np.std with ddof 0 for DV and BV;
    for PV sklearn's PCA() (the eigenvalues of np.cov, ddof 1), which keeps min(n, C)
    components, the top D† of them themselves, a class with fewer than D† taking their geometric
    mean for the missing ones. n samples span n − 1 directions: the others are round-off."""
    c = xc.shape[1]
    if kind == "dv":
        return np.mean(np.log(np.std(xc, axis=0)))
    if kind == "bv":
        return np.mean(np.log([np.std(xc[:, k] - xc[:, j]) for j in range(c) if j != k]))
    eig = np.sort(np.linalg.eigvalsh(np.cov(xc, rowvar=False, ddof=1)))[::-1]
    tiny = ROUND_OFF * eig[0]
    eig = np.where(np.arange(c) < len(xc) - 1, np.maximum(eig, tiny), tiny)
    d = min(components, c)
    have = eig[:min(len(xc), c)]
    if len(have) >= d:
        return np.mean(np.log(have[:d]))
    fill = np.exp(np.mean(np.log(have)))
    return np.mean(np.log(np.concatenate([have, [fill] * (d - len(have))])))


def authors_weights(x, t, counts, kind, components=10, substitute_below=0):
    """α ∝ r / n, classes with n ≤ substitute_below taking the mean log r of the others,
    Σ n α = Σ n (the NE normalisation, unchanged)."""
    counts = np.asarray(counts, dtype=np.float64)
    log_r = np.array([authors_log_radius(x[t == k], k, kind, components)
                      for k in range(len(counts))])
    small = counts <= substitute_below
    if small.any():
        log_r[small] = np.mean(log_r[~small])
    raw = np.exp(log_r) / counts
    return raw * counts.sum() / (counts * raw).sum()


@pytest.mark.parametrize("kind", ["dv", "bv", "pv"])
def test_authors_convention_matches_the_authors_formulas(kind):
    x, t = make_epoch(COUNTS, seed=1)
    options = {"components": 4} if kind == "pv" else {}
    weights = run_epoch(build_method(kind, COUNTS, convention="authors", **options), x, t)
    np.testing.assert_allclose(weights, authors_weights(x, t, COUNTS, kind, components=4),
                               rtol=1e-6)
    paper = run_epoch(build_method(kind, COUNTS, **options), x, t)
    assert not np.allclose(weights, paper, rtol=1e-3)  # the conventions really differ here


def test_authors_pv_fills_the_missing_components_of_a_small_class():
    """C = 6, D† = 4: the class of 5 keeps 5 components (4 real), the class of 4 keeps 4 (the
    last round-off), the class of 3 keeps 3 (the last round-off) and fills the fourth."""
    counts = [120, 80, 60, 5, 4, 3]
    x, t = make_epoch(counts, seed=2)
    weights = run_epoch(build_method("pv", counts, convention="authors", components=4), x, t)
    np.testing.assert_allclose(weights, authors_weights(x, t, counts, "pv", components=4),
                               rtol=1e-6)

    def eig(k):
        return np.sort(np.linalg.eigvalsh(np.cov(x[t == k], rowvar=False)))[::-1]

    # by hand for the class of 3: r = geometric mean of λ1, λ2 and the round-off 1e-14 λ1 (the
    # fill-in is their geometric mean, which leaves the mean of the logs as it is)
    r_small = (eig(5)[0] * eig(5)[1] * ROUND_OFF * eig(5)[0]) ** (1 / 3)
    r_big = np.exp(np.mean(np.log(eig(0)[:4])))
    assert np.isclose(weights[5] / weights[0], (r_small / 3) / (r_big / 120), rtol=1e-6)
    assert np.isclose(weights[3] / weights[0],
                      (np.exp(np.mean(np.log(eig(3)[:4]))) / 5) / (r_big / 120), rtol=1e-6)


def paper_like_share(counts):
    """α ∝ 1/n with Σ n α = Σ n: every class the same volume."""
    counts = np.asarray(counts, dtype=np.float64)
    return sum(counts) / len(counts) / counts


def test_a_class_of_at_most_d_samples_collapses_under_authors_and_leads_under_paper(caplog):
    """The issue's case: 10 classes at IF 100 (500 … 5), D† = 10. The classes of 8 and 5
    samples keep no more components than samples, the last of them round-off: under the
    authors' code their volumes collapse (their weights fall below what their counts alone,
    1/n normalised, would give), and it says so once; the paper's reading (S30) gives them the
    largest weights."""
    counts = [round(500 * 0.01 ** (k / 9)) for k in range(10)]
    assert counts[-2:] == [8, 5]
    x, t = make_epoch(counts, seed=7)
    method = build_method("pv", counts, convention="authors")
    with caplog.at_level("WARNING", logger="lt_bench"):
        authors = run_epoch(method, x, t)
        run_epoch(method, x, t)
    told = [r.getMessage() for r in caplog.records if "collapses" in r.getMessage()]
    assert len(told) == 1 and "[8, 9]" in told[0] and "D† = 10" in told[0]
    radius = authors * counts  # ∝ r: the collapse is of the volume, by a root of round-off
    assert radius[8] < 0.1 * radius[:8].min() and radius[9] < 0.1 * radius[:8].min()
    assert authors[8] < paper_like_share(counts)[8] and authors[9] < paper_like_share(counts)[9]
    paper = run_epoch(build_method("pv", counts), x, t)
    assert set(np.argsort(paper)[-2:]) == {8, 9}
    # the classes of more than D† samples agree with the code once the normalisation is set
    # aside: their ratios to class 0
    reference = authors_weights(x, t, counts, "pv", components=10)
    np.testing.assert_allclose(authors[:8] / authors[0], reference[:8] / reference[0],
                               rtol=1e-6)


def test_authors_pv_against_sklearn_on_float32_logits():
    """The code's own computation, sklearn's PCA on float32 logits: the classes of more than D†
    samples agree to float32 precision; the collapsed ones are round-off there, within a factor
    of 3 of lt_bench's (their radius is the fifth or eighth root of a round-off of 1e-16…1e-13)."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    counts = [round(500 * 0.01 ** (k / 9)) for k in range(10)]
    x, t = make_epoch(counts, seed=8)
    ours = run_epoch(build_method("pv", counts, convention="authors"), x, t)
    log_r = []
    for k in range(10):
        ev = decomposition.PCA().fit(x[t == k].astype(np.float32)).explained_variance_
        ev = ev.astype(np.float64)[:10]
        if len(ev) < 10:
            ev = np.concatenate([ev, [np.exp(np.mean(np.log(ev)))] * (10 - len(ev))])
        log_r.append(np.mean(np.log(ev)))
    raw = np.exp(log_r) / counts
    code = raw * sum(counts) / (raw * counts).sum()
    np.testing.assert_allclose(ours[:8] / ours[0], code[:8] / code[0], rtol=5e-3)
    assert (np.abs(np.log(ours[8:] / code[8:])) < np.log(3)).all()


@pytest.mark.parametrize("kind", ["dv", "bv"])
def test_authors_substitution_includes_the_threshold(kind):
    """Class 4 has exactly 20 samples: substituted when n ≤ 20 (authors), kept when n < 20."""
    x, t = make_epoch(COUNTS, seed=3)
    authors = run_epoch(build_method(kind, COUNTS, convention="authors", substitute_below=20),
                        x, t)
    np.testing.assert_allclose(authors, authors_weights(x, t, COUNTS, kind, substitute_below=20),
                               rtol=1e-6)
    assert np.isclose(authors[4] * 20, authors[5] * 8, rtol=1e-6)  # equal radii
    paper = run_epoch(build_method(kind, COUNTS, substitute_below=20), x, t)
    assert not np.isclose(paper[4] * 20, paper[5] * 8, rtol=1e-3)  # only class 5 substituted


def test_authors_default_is_no_substitution_and_paper_default_is_s30():
    x, t = make_epoch(COUNTS, seed=4)
    off = run_epoch(build_method("dv", COUNTS, convention="authors"), x, t)
    np.testing.assert_allclose(off, authors_weights(x, t, COUNTS, "dv"), rtol=1e-6)
    assert build_method("dv", COUNTS, convention="authors").substitute_below == 0
    assert build_method("dv", COUNTS).substitute_below == 30
    assert build_method("dv", COUNTS, convention="authors", substitute_below=None) \
        .substitute_below == 0
    with pytest.raises(LtBenchError, match="convention='author'.*did you mean 'authors'"):
        build_method("dv", COUNTS, convention="author")


def test_ddof_by_hand():
    """Class 0: the 5 points (0,0) (2,2) (0,2) (2,0) (1,1), squared deviations summing to 4 per
    axis; class 1: (0,0) (2,2) (1,1), summing to 2. ddof 1: σ = 1 for both. ddof 0: σ² = 4/5
    and 2/3. α ∝ r / n normalised to Σ n α = 8."""
    x = torch.tensor([[0.0, 0], [2, 2], [0, 2], [2, 0], [1, 1], [0, 0], [2, 2], [1, 1]],
                     dtype=torch.float64)
    t = torch.tensor([0] * 5 + [1] * 3)
    for convention, r in (("paper", [1.0, 1.0]), ("authors", [np.sqrt(0.8), np.sqrt(2 / 3)])):
        method = build_method("dv", [5, 3], convention=convention, substitute_below=0)
        method(x, t)
        method.end_epoch()
        raw = np.array(r) / [5, 3]
        expected = raw * 8 / (raw * [5, 3]).sum()
        np.testing.assert_allclose(method.class_weights.double().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("convention", ["paper", "authors"])
@pytest.mark.parametrize("substitute_below", [0, 30, None])
def test_pv_with_classes_of_at_most_d_samples_stays_finite(convention, substitute_below):
    """C = 12, D† = 10: classes of 10, 3, 2 and 1 samples (1 has no covariance at all)."""
    counts = [200, 150, 100, 60, 40, 30, 25, 15, 10, 3, 2, 1]
    x, t = make_epoch(counts, seed=5)
    method = build_method("pv", counts, convention=convention,
                          substitute_below=substitute_below)
    for _ in range(2):
        weights = run_epoch(method, x, t)
        assert np.isfinite(weights).all() and (weights > 0).all()
        assert np.isclose((weights * counts).sum(), sum(counts))
    if convention == "authors" and substitute_below == 0:
        valid = [k for k in range(12) if counts[k] >= 2]
        log_r = [authors_log_radius(x[t == k], k, "pv", 10) for k in valid]
        # the class of 1 sample has no spread: it takes the mean log r of the others
        raw = np.exp(np.append(log_r, np.mean(log_r))) / counts
        np.testing.assert_allclose(weights, raw * sum(counts) / (raw * counts).sum(), rtol=1e-6)


@pytest.mark.parametrize("kind", ["dv", "pv", "bv"])
def test_authors_zero_spread_and_single_samples_stay_finite(kind):
    counts = [50, 40, 30, 1]
    x, t = make_epoch(counts, seed=6)
    x[t == 2] = x[t == 2][0]  # class 2: every logit vector the same
    weights = run_epoch(build_method(kind, counts, convention="authors"), x, t)
    assert np.isfinite(weights).all() and (weights > 0).all()


def test_lt_bench_methods_shows_the_convention_and_its_defaults():
    from lt_bench import method_options

    for kind in ("dv", "pv", "bv"):
        options = method_options(kind)
        assert options["convention"] == "paper"
        assert repr(options["substitute_below"]) == "None (paper: 30, authors: 0)"


# -- the epochs of the CIFAR protocols -----------------------------------------------------------
# (first epoch, last epoch, counted from 1): (lr, weights not uniform, statistics gathered), from
# the protocol files' comments and, for zheng_ng_code, the authors' code: lr × 0.01 once the
# 1-based epoch reaches 160 and 180; w_epoch=160 counted from 0 gathers in epoch 161 under
# uniform weights, so the first class-volume weights train epoch 162.
EPOCH_TABLES = {
    "zheng_ng_code": [((1, 159), (0.1, False, False)), ((160, 160), (1e-3, False, False)),
                      ((161, 161), (1e-3, False, True)), ((162, 179), (1e-3, True, True)),
                      ((180, 200), (1e-5, True, True))],
    "paper_cifar": [((1, 159), (0.1, False, False)), ((160, 160), (1e-3, False, True)),
                    ((161, 179), (1e-3, True, True)), ((180, 200), (1e-5, True, True))],
    "quick": [((1, 4), (0.1, False, False)), ((5, 5), (0.1, False, True)),
              ((6, 6), (0.01, True, True)), ((7, 7), (1e-3, True, True))],
    "demo": [((1, 1), (0.1, False, True)), ((2, 2), (0.1, True, True))],
    # the CPU comparison: lr 0.1 to epoch 45, statistics of epoch 46 (lr 0.01) weigh 47 on
    "short_cifar": [((1, 45), (0.1, False, False)), ((46, 46), (0.01, False, True)),
                    ((47, 47), (0.01, True, True)), ((48, 49), (1e-3, True, True))],
}


def epochs_as_trained(protocol: str, steps_per_epoch: int = 2) -> list[dict]:
    """Per epoch, what the training loop saw: the lr of each step, whether the weights of the
    first step were uniform, whether statistics were gathered by the epoch's end. The real
    loop, optimizer, schedule and dv criterion, on a linear model over fixed inputs."""
    from lt_bench.config import load_config
    from lt_bench.run.assemble import build_optimizer, build_schedule, method_options_of
    from lt_bench.run.loop import train_one_epoch

    cfg = load_config([], [f"protocol={protocol}", "method=dv", "method.convention=authors"])
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    criterion = build_method("dv", [30, 10], **method_options_of(cfg))
    optimizer = build_optimizer(model, cfg.protocol, torch.device("cpu"))
    scheduler = build_schedule(optimizer, steps_per_epoch, cfg.protocol)
    x, y = torch.randn(40, 4), torch.tensor([0] * 30 + [1] * 10)
    seen: list[dict] = []

    def batches():
        epoch = {"lr": [], "weighted": not bool((criterion.class_weights == 1).all())}
        for _ in range(steps_per_epoch):
            epoch["lr"].append(optimizer.param_groups[0]["lr"])  # the lr this step uses
            yield x, y
        epoch["gathered"] = bool(criterion.stats.count.sum() > 0)  # before end_epoch resets
        seen.append(epoch)

    for e in range(cfg.protocol.epochs):
        train_one_epoch(model, criterion, optimizer, scheduler, batches(), epoch=e,
                        autocast=torch.autocast("cpu", enabled=False),
                        memory_format=torch.contiguous_format, log_every=100,
                        on_step=lambda *a: None)
    return seen


@pytest.mark.parametrize("protocol", sorted(EPOCH_TABLES))
def test_lr_and_weights_per_epoch_follow_the_table(protocol):
    seen = epochs_as_trained(protocol)
    table = EPOCH_TABLES[protocol]
    assert len(seen) == table[-1][0][1]  # the table covers every epoch
    for (first, last), (lr, weighted, gathered) in table:
        for epoch in range(first, last + 1):
            got = seen[epoch - 1]
            assert got["lr"][-1] == pytest.approx(lr, rel=1e-9), (protocol, epoch)
            assert got["weighted"] == weighted, (protocol, epoch)
            assert got["gathered"] == gathered, (protocol, epoch)
    assert all(len(set(e["lr"])) == 1 for e in seen[1:])  # decays fall on epoch boundaries


def test_zheng_ng_code_sets_the_rest_of_the_authors_run():
    from lt_bench.config import load_config

    cfg = load_config([], ["protocol=zheng_ng_code", "method=dv", "method.convention=authors"])
    p = cfg.protocol
    assert (p.epochs, p.batch_size, p.optimizer, p.lr, p.momentum, p.nesterov) == \
        (200, 100, "sgd", 0.1, 0.9, True)
    assert (p.weight_decay, p.warmup_epochs, p.eval_every) == (5e-4, 0, 1)
    # bf16 where native (it did not move the CPU comparison, docs/RESULTS.md); fp32 one key away
    assert cfg.precision == "auto" and cfg.backbone.name == "resnet32"
    assert (cfg.data.pad_mode, cfg.data.normalize) == ("reflect", "cifar_fixed")
    assert load_config([], ["precision=fp32", "protocol=zheng_ng_code"]).precision == "fp32"


@pytest.mark.parametrize("components, told", [(None, True), (4, False)])
def test_logits_of_fewer_features_than_axes_are_named(caplog, components, told):
    """A head on F features puts every class's logits in an F-dimensional subspace: with F = 4
    of C = 6 axes, every class (all have more than 6 samples) spans 4 of PV's 6 axes and the
    run says so once; with D† = 4 the features span every axis PV uses, and it says nothing."""
    x, t = make_epoch(COUNTS, seed=3)
    rng = np.random.default_rng(4)
    x = x @ rng.normal(size=(6, 4)) @ rng.normal(size=(4, 6))  # rank 4
    method = build_method("pv", COUNTS, convention="authors", components=components)
    with caplog.at_level("WARNING", logger="lt_bench"):
        run_epoch(method, x, t)
        run_epoch(method, x, t)
    said = [r.getMessage() for r in caplog.records if "span only" in r.getMessage()]
    if told:
        assert len(said) == 1
        assert "6 class(es) of more than D† = 6 samples ([0, 1, 2, 3, 4, 5])" in said[0]
        assert "span only 4 of the 6 axes" in said[0]
    else:
        assert said == []

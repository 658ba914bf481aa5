"""What a method declares it needs, end to end through the harness on generated data: a
look-ahead run resumes exactly, a need the backbone or the launch cannot meet is refused before
training, and a method with a meta set trains on data of its own (its own trunk)."""

from __future__ import annotations

import pytest
import torch

from lt_bench import build_method
from lt_bench.config import config_hash, load_config
from lt_bench.data import load_data
from lt_bench.errors import LtBenchError
from lt_bench.run.assemble import build_model, check_needs, resolve_method
from lt_bench.run.fork import trunk_config
from lt_bench.run.train import claim_and_train, train
from lt_bench.sweep.trunks import plan
from lt_bench.workspace.layout import run_folder

TINY = ["dataset=synthetic_lt", "imbalance=20", "protocol.batch_size=64", "protocol.lr=0.05",
        "protocol.warmup_epochs=0", "precision=fp32", "quiet=true", "deterministic=true",
        "tracking.tracker=local", "protocol.epochs=3", "protocol.start_epoch=1",
        "protocol.milestones=[2]"]


@pytest.mark.parametrize("method", ["meta_weight_net"])  # the most state: a net, its optimizer
def test_a_run_with_needs_resumes_to_the_run_trained_alone(tmp_path, method):
    alone = train(load_config([], [*TINY, f"method={method}", f"workspace={tmp_path / 'a'}"]))
    cfg = load_config([], [*TINY, f"method={method}", f"workspace={tmp_path / 'b'}"])
    claim_and_train(cfg, run_folder, stop_after=2)  # stopped after its second epoch (a checkpoint)
    resumed = train(cfg)
    assert resumed.final == alone.final and resumed.best == alone.best
    assert [h["train/loss"] for h in resumed.history] == [h["train/loss"] for h in alone.history]
    # the method did depart from plain cross-entropy after its start
    plain = train(load_config([], [*TINY, "method=ce", f"workspace={tmp_path / 'c'}"]))
    assert plain.history[0]["train/loss"] == alone.history[0]["train/loss"]
    assert plain.history[1]["train/loss"] != alone.history[1]["train/loss"]


def test_a_need_the_backbone_cannot_meet_is_refused_before_training():
    cfg = load_config([], [*TINY, "method=ib", "backbone=resnet50"])
    data = load_data(cfg.dataset, cfg.imbalance, dict(cfg.data))
    with pytest.raises(LtBenchError, match="needs the penultimate features.*resnet50"):
        build_model(cfg, resolve_method(cfg), data, torch.device("cpu"))
    cfg = load_config([], [*TINY, "method=ldam_drw"])
    model = build_model(cfg, resolve_method(cfg), data, torch.device("cpu"))
    assert type(model.fc).__name__ == "CosineLinear"
    plain = load_config([], TINY)
    assert type(build_model(plain, resolve_method(plain), data, torch.device("cpu")).fc).__name__ \
        != "CosineLinear"  # only the method that declares it gets the cosine head


def test_a_look_ahead_is_refused_under_torchrun_and_without_a_meta_set():
    cfg = load_config([], [*TINY, "method=da"])
    data = load_data(cfg.dataset, cfg.imbalance, dict(cfg.data))
    assert data.meta is not None and data.meta.train_counts == [10] * 5
    method = resolve_method(cfg)
    check_needs(cfg, method, data, 1)
    with pytest.raises(LtBenchError, match="without torchrun"):
        check_needs(cfg, method, data, 2)
    data.meta = None  # a data set factory that ignores data.meta_per_class
    with pytest.raises(LtBenchError, match="needs a balanced meta set"):
        check_needs(cfg, method, data, 1)


class Job:
    def __init__(self, overrides, workspace):
        self.cfg = load_config([], [*TINY, "protocol.start_epoch=2", *overrides,
                                    f"workspace={workspace}"])
        self.seed = 0


def test_a_method_with_a_meta_set_shares_a_trunk_only_with_the_same_data(tmp_path):
    assert build_method("da", [10, 1], start_epoch=5).plain_epochs == 5
    assert build_method("ldam_drw", [10, 1], start_epoch=5).plain_epochs == 0  # cosine head
    jobs = [Job([f"method={m}"], tmp_path) for m in ("ce", "effective_number", "da", "da_dv")]
    trunks = plan(jobs)
    by_methods = sorted(sorted(j.cfg.method.name for j in t.branches) for t in trunks)
    assert by_methods == [["ce", "effective_number"], ["da", "da_dv"]]
    meta_trunk = next(t for t in trunks if t.branches[0].cfg.method.name.startswith("da"))
    assert trunk_config(meta_trunk.cfg).data.meta_per_class == 10
    # ce told to hold out the same meta set trains the same data as da: one trunk
    same = [Job(["method=ce", "data.meta_per_class=10"], tmp_path), Job(["method=da"], tmp_path)]
    assert len(plan(same)) == 1
    assert config_hash(trunk_config(same[0].cfg)) == config_hash(trunk_config(same[1].cfg))


def test_a_run_resolves_and_builds_its_method_once(tmp_path, monkeypatch):
    """Looked up and checked once before the data loads, built there on made-up counts (the
    early check), then built once on the real counts: nothing resolves it by name again."""
    import lt_bench.api
    import lt_bench.run.assemble as assemble
    calls = {"check": 0, "build": 0}

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(assemble, "check_method", counted("check", assemble.check_method))
    monkeypatch.setattr(assemble, "construct_method",
                        counted("build", assemble.construct_method))
    monkeypatch.setattr(lt_bench.api, "check_method", counted("check", lt_bench.api.check_method))
    train(load_config([], [*TINY, "method=dv", f"workspace={tmp_path}"]))
    assert calls == {"check": 1, "build": 2}  # resolved once; built early, then on the data

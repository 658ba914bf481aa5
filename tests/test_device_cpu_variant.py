"""The CPU variant (memory format, torch.compile) chosen by timing: pins win, the cache spares a
second probe, the probe leaves the run untouched, and a resumed run keeps its variant."""

import json
import platform
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lt_bench.config import load_config
from lt_bench.device import cpu_variant
from lt_bench.device.cpu_variant import Choice, Workload, choose, time_variant
from lt_bench.run.train import train

TINY = ["dataset=synthetic_lt", "imbalance=10", "protocol.epochs=1", "tracking.tracker=local",
        "quiet=true", "precision=fp32"]


def small_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def workload(epochs=100, train_images=6400) -> Workload:
    return Workload(sample_shape=(3, 8, 8), num_classes=4, precision="fp32", batch=16,
                    eval_batch=32, train_images=train_images, eval_images=1000, epochs=epochs)


def cfg_of(channels_last=None, compile=None, deterministic=False):
    return SimpleNamespace(channels_last=channels_last, compile=compile,
                           deterministic=deterministic, backbone={"name": "small"})


def fake_timing(rates: dict, calls: list):
    """time_variant's stand-in: ``rates[label] = (train img/s, eval img/s, compile s)``."""
    def timed(model, wl, autocast, channels_last, compiled, drop_above):
        label = cpu_variant.variant_label(channels_last, compiled)
        calls.append(label)
        train, evaluate, compile_s = rates[label]
        f = {"train_img_s": train, "eval_img_s": evaluate, "step_s": wl.batch / train,
             "epoch_s": wl.epoch_s(train, evaluate)}
        return {**f, "compile_s": compile_s} if compiled else f
    return timed


def test_the_probe_leaves_the_model_and_the_random_stream_untouched():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    for channels_last in (False, True):
        f = time_variant(model, workload(), torch.autocast("cpu", enabled=False), channels_last,
                         False, drop_above=None)
        assert f["train_img_s"] > 0 and f["eval_img_s"] > 0
        assert f["epoch_s"] == pytest.approx(6400 / f["train_img_s"] + 1000 / f["eval_img_s"])
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model[0].weight.is_contiguous()  # the copy was converted, not the model


def test_pins_skip_the_probe_and_a_short_run_keeps_the_default(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cpu_variant, "time_variant", fake_timing({}, calls))
    pinned = choose(cfg_of(True, False), small_model(), workload(), None, world_size=1,
                    cache=tmp_path / "c.json")
    assert (pinned.channels_last, pinned.compile, pinned.how) == (True, False, "pinned")
    short = choose(cfg_of(), small_model(), workload(epochs=1, train_images=160), None,
                   world_size=1, cache=tmp_path / "c.json")
    assert (short.channels_last, short.compile, short.how) == (False, False, "default")
    ranks = choose(cfg_of(), small_model(), workload(), None, world_size=2, cache=None)
    assert ranks.how == "default"
    assert calls == [] and not (tmp_path / "c.json").exists()


def test_the_shortest_epoch_wins_and_is_cached(monkeypatch, tmp_path):
    calls = []
    # channels_last trains slower but scores much faster: the epoch, not the step, decides
    rates = {"contiguous": (500.0, 1000.0, 0), "channels_last": (450.0, 4000.0, 0)}
    monkeypatch.setattr(cpu_variant, "time_variant", fake_timing(rates, calls))
    cache = tmp_path / "variants.json"
    # 6400/500 + 1000/1000 = 13.8 s against 6400/450 + 1000/4000 = 14.47 s: contiguous
    first = choose(cfg_of(), small_model(), workload(epochs=10), None, world_size=1, cache=cache)
    assert (first.channels_last, first.how) == (False, "measured")
    assert calls == ["contiguous", "channels_last"]
    assert first.figures["contiguous"]["epoch_s"] == pytest.approx(13.8)
    again = choose(cfg_of(), small_model(), workload(epochs=10), None, world_size=1, cache=cache)
    assert (again.channels_last, again.how) == (False, "cached")
    assert len(calls) == 2  # no second probe
    assert json.loads(cache.read_text())  # one entry, readable
    # a test set scored 10× per epoch: 6400/500 + 10/1 = 22.8 against 14.2 + 2.5 = 16.7
    busy = Workload(**{**workload(epochs=10).__dict__, "eval_images": 10000})
    calls.clear()
    third = choose(cfg_of(), small_model(), busy, None, world_size=1, cache=None)
    assert third.channels_last and calls == ["contiguous", "channels_last"]


def test_compile_is_timed_only_for_a_long_run_and_kept_only_when_it_repays(monkeypatch):
    calls = []
    rates = {"contiguous": (500.0, 1000.0, 0), "channels_last": (100.0, 200.0, 0),
             "contiguous + compile": (800.0, 1000.0, 120.0)}
    monkeypatch.setattr(cpu_variant, "time_variant", fake_timing(rates, calls))
    # 10 epochs of 13.8 s: far below COMPILE_MIN_RUN_S, compile is not even timed
    short = choose(cfg_of(), small_model(), workload(epochs=10), None, world_size=1, cache=None)
    assert not short.compile and "contiguous + compile" not in calls
    # 200 epochs: eager 13.8 s, compiled 9.0 s an epoch; 960 s saved against 120 s compiling
    long = choose(cfg_of(), small_model(), workload(epochs=200), None, world_size=1, cache=None)
    assert long.compile and not long.channels_last and calls[-1] == "contiguous + compile"
    rates["contiguous + compile"] = (800.0, 1000.0, 2000.0)  # compiling costs more than it saves
    slow = choose(cfg_of(), small_model(), workload(epochs=200), None, world_size=1, cache=None)
    assert not slow.compile
    pinned_eager = choose(cfg_of(compile=False), small_model(), workload(epochs=200), None,
                          world_size=1, cache=None)
    assert not pinned_eager.compile and calls[-1] == "channels_last"


def test_a_run_prints_records_and_reuses_its_variant(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cpu_variant, "MIN_RUN_STEPS", 0)  # the tiny run is worth a probe here
    base = TINY + [f"data.cache_dir={tmp_path / 'cache'}", "quiet=false"]
    first = train(load_config([], base + [f"workspace={tmp_path / 'a'}"]))
    assert first.variant["how"] == "measured"
    assert set(first.variant["figures"]) == {"contiguous", "channels_last"}
    said = capsys.readouterr().out
    assert "lt-bench: variant: " in said
    assert "freed memory kept for reuse" in said or platform.libc_ver()[0] != "glibc"
    second = train(load_config([], base + [f"workspace={tmp_path / 'b'}"]))
    assert second.variant["how"] == "cached"
    assert second.variant["label"] == first.variant["label"]
    pinned = train(load_config([], base + [f"workspace={tmp_path / 'c'}",
                                           "channels_last=true", "compile=false"]))
    assert (pinned.variant["label"], pinned.variant["how"]) == ("channels_last", "pinned")
    assert pinned.status == "FINISHED"


def test_a_resumed_run_keeps_the_variant_its_checkpoint_recorded(tmp_path):
    from lt_bench.run.checkpoint import RunState
    from lt_bench.run.train import variant_of

    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = RunState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1),
                     nn.Identity(), torch.device("cpu"), next_epoch=1)
    state.variant = Choice(True, False, "measured", "timed").to_dict()
    state.save(tmp_path / "checkpoint.pt")
    state.variant = None
    state.restore(tmp_path / "checkpoint.pt")
    choice = variant_of(state, None, None, torch.device("cpu"), "fp32", 1, None)
    assert (choice.channels_last, choice.compile, choice.how) == (True, False, "checkpoint")
    # a checkpoint written before variants were recorded goes on as it trained: contiguous, eager
    state.variant = None
    old = variant_of(state, cfg_of(), None, torch.device("cpu"), "fp32", 1, None)
    assert (old.channels_last, old.compile, old.how) == (False, False, "checkpoint")
    assert state.variant["label"] == "contiguous"


def test_a_probe_that_fails_leaves_the_run_on_the_old_default(monkeypatch):
    def broken(model, wl, autocast, channels_last, compiled, drop_above):
        return {"dropped": True, "train_img_s": 0.0, "error": "no kernel for this layout"}

    monkeypatch.setattr(cpu_variant, "time_variant", broken)
    choice = choose(cfg_of(), small_model(), workload(), None, world_size=1, cache=None)
    assert (choice.channels_last, choice.compile, choice.how) == (False, False, "default")
    assert "no kernel for this layout" in choice.why

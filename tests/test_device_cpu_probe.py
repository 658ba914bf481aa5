"""The CPU probe's timing and the fair thread count, against a fake clock and made-up loads."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lt_bench.device import cpu_threads, cpu_variant


class FakeClock:
    """A clock that each step advances by the next of ``durations``."""

    def __init__(self, durations):
        self.now, self.durations = 0.0, list(durations)

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.durations.pop(0)


def test_warm_up_steps_are_left_out_of_the_timing():
    # oneDNN and AMX warming up: 5, 3, 1.2 s, then 1.0 s a step; a spike among the timed ones
    clock = FakeClock([5.0, 3.0, 1.2, 1.0, 1.0, 1.0] + [1.0, 1.0, 9.0, 1.0, 1.0, 1.0])
    warm, step_s = cpu_variant.settle(clock.step, clock)
    # the 6th step is the first within 10 % of the median of the three before it (1.2, 1, 1)
    assert warm == pytest.approx([5.0, 3.0, 1.2, 1.0, 1.0, 1.0])
    assert step_s == pytest.approx(1.0)  # the median: neither the warm-up nor the spike
    assert not clock.durations


def test_a_step_that_never_settles_is_timed_after_the_longest_warm_up():
    durations = [float(i % 2 + 1) for i in range(cpu_variant.WARMUP_MAX)] + [2.0] * 6
    clock = FakeClock(durations)
    warm, step_s = cpu_variant.settle(clock.step, clock)
    assert len(warm) == cpu_variant.WARMUP_MAX and step_s == pytest.approx(2.0)


def test_scoring_is_timed_after_its_warm_up_too():
    import contextlib

    import torch

    clock = FakeClock([4.0, 2.0, 0.6, 0.5, 0.5, 0.5] + [0.5, 0.5, 3.0, 0.5, 0.5, 0.5])

    class Scorer(torch.nn.Module):
        def forward(self, x):
            clock.step()
            return x

    workload = cpu_variant.Workload((3, 4, 4), 10, "fp32", 8, 250, 100, 500, 1)
    img_s = cpu_variant.time_eval(Scorer(), workload, contextlib.nullcontext(),
                                  torch.contiguous_format, torch.Generator(), clock)
    assert img_s == pytest.approx(250 / 0.5) and not clock.durations


def test_a_short_run_uses_the_cached_choice(tmp_path, monkeypatch):
    from types import SimpleNamespace

    cfg = SimpleNamespace(channels_last=None, compile=None, deterministic=False,
                          backbone={"name": "resnet32"})
    workload = cpu_variant.Workload((3, 32, 32), 10, "bf16", 100, 1000, 500, 1000, 1)
    assert workload.steps < cpu_variant.MIN_RUN_STEPS
    cache = tmp_path / "cache.json"
    short = cpu_variant.choose(cfg, None, workload, None, world_size=1, cache=cache)
    assert short.how == "default" and "has not measured it yet" in short.why
    known = cpu_variant.Choice(True, False, "measured", "w", {"channels_last": {
        "train_img_s": 770.0, "eval_img_s": 3813.0}})
    cpu_variant.write_cache(cache, cpu_variant.cache_key(cfg, workload), known)
    hit = cpu_variant.choose(cfg, None, workload, None, world_size=1, cache=cache)
    assert (hit.how, hit.channels_last) == ("cached", True)
    cfg.channels_last = False  # pinned against the cache: the pin wins, not the cache
    assert cpu_variant.choose(cfg, None, workload, None, world_size=1,
                              cache=cache).channels_last is False


@pytest.mark.parametrize("others, threads", [(0.0, 2), (0.3, 2), (0.7, 1), (1.0, 1), (1.2, 1)])
def test_threads_are_the_cores_others_leave_free(monkeypatch, others, threads):
    """Two cores; in a 100-tick window per core this process used 80 ticks and other
    processes ``others`` cores' worth."""
    seen = iter([((0, 0), 0), ((80 + round(others * 100), 200), 80)])
    monkeypatch.setattr(cpu_threads, "busy_ticks", lambda cores: state[0])
    monkeypatch.setattr(cpu_threads, "own_ticks", lambda: state[1])
    set_to = []
    monkeypatch.setattr("torch.set_num_threads", set_to.append)
    fair = cpu_threads.FairThreads(most=2, cores=[0, 1])
    state = next(seen)
    fair.look()
    state = next(seen)
    fair.look()
    assert fair.threads == threads and set_to == [threads]
    assert fair.others == pytest.approx(others)


def test_never_more_threads_than_the_run_started_with(monkeypatch):
    ticks = iter([(0, 0), (0, 200)])
    monkeypatch.setattr(cpu_threads, "busy_ticks", lambda cores: next(ticks))
    monkeypatch.setattr(cpu_threads, "own_ticks", lambda: 0)
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)
    fair = cpu_threads.FairThreads(most=1, cores=[0, 1])  # a sweep worker's one thread
    fair.look()
    fair.look()
    assert fair.threads == 1 and "1 thread of 2 cores" in fair.describe()


def test_a_run_gives_back_the_threads_it_started_with(monkeypatch, tmp_path):
    """Other processes keep every core busy: the run trains on one thread, and when it ends the
    process has its two again (a later run in it takes that count as its own most)."""
    import torch

    from lt_bench.config import load_config
    from lt_bench.run.train import train

    ticks = [0]

    def all_busy(cores):
        ticks[0] += 100 * len(cores)
        return ticks[0], ticks[0]  # (busy, all): every tick of every core, none of them ours

    monkeypatch.setattr(cpu_threads, "busy_ticks", all_busy)
    monkeypatch.setattr(cpu_threads, "own_ticks", lambda: 0)
    set_to, real_set = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (set_to.append(n), real_set(n)))
    before = torch.get_num_threads()
    real_set(2)
    try:
        train(load_config([], ["dataset=synthetic_lt", "imbalance=10", "protocol.epochs=1",
                               "tracking.tracker=local", "quiet=true", "precision=fp32",
                               "channels_last=false", "compile=false", f"workspace={tmp_path}"]))
        assert set_to == [1, 2] and torch.get_num_threads() == 2
    finally:
        real_set(before)


KEEP_PROBE = """
import sys, torch
from pathlib import Path

def faults():
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])

if sys.argv[1] == "keep":
    from lt_bench.device.cpu_memory import keep_freed_memory
    keep_freed_memory()
counts = []
for _ in range(16):
    before = faults()
    x = torch.ones(16 << 20)  # 64 MiB: above glibc's largest mmap threshold
    counts.append(faults() - before)
    del x
print(sum(counts[-4:]))
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or platform.libc_ver()[0] != "glibc",
                    reason="minor page faults are read from /proc, and only glibc has mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    """A 64 MiB tensor is 16,384 pages. glibc maps it anew and faults every page in at each
    allocation; after keep_freed_memory the heap grows for a few allocations (torch aligns its
    blocks, which fragments the heap), then the allocations reuse freed pages."""
    def last_four_faults(how: str) -> int:
        out = subprocess.run([sys.executable, "-c", KEEP_PROBE, how], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[-1])

    assert last_four_faults("as-is") > 4 * 16384 * 0.9
    assert last_four_faults("keep") < 4 * 16384 * 0.05


def test_the_cache_is_never_written_through_a_planted_link(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep")
    folder = tmp_path / "cache"
    folder.mkdir()
    cache = folder / "cpu_variants.json"
    cache.symlink_to(outside)
    cpu_variant.write_cache(cache, "k", cpu_variant.Choice(True, False, "measured"))
    assert outside.read_text() == "keep" and cache.is_symlink()
    cache.unlink()
    cpu_variant.write_cache(cache, "k", cpu_variant.Choice(True, False, "measured"))
    assert cpu_variant.read_cache(cache)["k"]["channels_last"] is True

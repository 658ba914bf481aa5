"""On a CPU, the fastest way to run this run's backbone, chosen by timing it on this machine.

The candidates are the memory format (contiguous or channels_last) and, for a run long enough to
repay its compilation, torch.compile. No rule by CPU name picks them: in bf16, channels_last made
ResNet-32 8× slower on an AMD EPYC with avx512_bf16 under torch 2.15, 1.15× faster on the same
kind of CPU under torch 2.14.1, and 1.2× faster on an Intel Xeon with AMX (docs/BENCHMARKS.md).
So the first run on a machine trains a copy of its model on random tensors for a few steps in
each candidate, at the run's batch, precision and thread count, scores a batch
of the evaluation size too, and keeps the candidate with the shortest epoch (training plus
evaluation). The choice is cached per machine, CPU, torch version, backbone, precision, batch
and threads, so later runs pay nothing, and it is kept in the run's checkpoint, so a resumed run
or a branch continues with the variant it started with.

The probe never touches the run itself: a deep copy of the model, a private random generator,
and the global random state restored afterwards. The variants compute the same function; their
results differ by floating-point rounding only, as two thread counts do.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lt_bench.errors import LtBenchError
from lt_bench.workspace.files import write_file
from lt_bench.workspace.provenance import cpu_model

#: Warm-up: oneDNN creates its primitives and AMX sets up its tiles over the first steps, and
#: one memory format takes more steps than another to get there (on an Intel Xeon with AMX a
#: probe of 1 + 3 steps timed channels_last at half its speed). So each candidate runs until a
#: step is within SETTLE of the median of the three before it (at least WARMUP_MIN steps, at
#: most WARMUP_MAX), and only then are TIMED_STEPS timed, their median kept.
WARMUP_MIN, WARMUP_MAX, SETTLE, TIMED_STEPS = 4, 24, 0.10, 6
#: a run of fewer training steps keeps the defaults (contiguous, eager) unless this machine's
#: cache already knows its answer: probing two memory formats costs about 2 × 20 steps
MIN_RUN_STEPS = 400
#: torch.compile is tried only when the run's eager estimate is at least this long: compiling a
#: ResNet for the CPU takes about a minute, which a shorter run would not win back
COMPILE_MIN_RUN_S = 1800.0
#: a candidate whose warm-up step takes this many times the best step so far is dropped at once
#: (bf16 channels_last took 8× longer per step on the AMD EPYC: timing it fully wastes seconds)
DROP_SLOWER = 2.0
CACHE_NAME = "cpu_variants.json"
#: part of the cache key: choices of an older probe (timed within its warm-up) are not served
PROBE_VERSION = "settled-3"


@dataclass
class Choice:
    """How a run executes its backbone; ``how`` says where the choice came from."""

    channels_last: bool = False
    compile: bool = False
    how: str = "default"  # measured | cached | pinned | checkpoint (resumed, branched) | default
    why: str = ""
    figures: dict = field(default_factory=dict)  # label -> train/eval img/s, epoch s, compile s

    @property
    def label(self) -> str:
        return variant_label(self.channels_last, self.compile)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        """One line for the run's output: the variant, then the figures behind it."""
        measured = "; ".join(
            f"{name} {f['train_img_s']:,.0f} train / "
            + (f"{f['eval_img_s']:,.0f} eval img/s" if f.get("eval_img_s") else "eval not timed")
            + (f", compiled in {f['compile_s']:.0f} s" if f.get("compile_s") else "")
            + (" (dropped after its first step)" if f.get("dropped") else "")
            for name, f in self.figures.items())
        return f"{self.label} ({self.how}{': ' + self.why if self.why else ''}" + (
            f"; {measured})" if measured else ")")

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}

    @classmethod
    def from_dict(cls, d: dict, how: str) -> Choice:
        return cls(channels_last=bool(d.get("channels_last")), compile=bool(d.get("compile")),
                   how=how, why=str(d.get("why", "")), figures=dict(d.get("figures") or {}))


def variant_label(channels_last: bool, compiled: bool) -> str:
    return ("channels_last" if channels_last else "contiguous") + (" + compile" if compiled
                                                                   else "")


@dataclass
class Workload:
    """What one run asks of its backbone: the probe's inputs and the epoch it estimates."""

    sample_shape: tuple[int, ...]
    num_classes: int
    precision: str  # fp32 | bf16, as resolved
    batch: int
    eval_batch: int
    train_images: int  # per epoch
    eval_images: float  # per epoch (the test set times the share of epochs that score it)
    epochs: int

    @property
    def steps(self) -> int:
        return self.epochs * -(-self.train_images // self.batch)

    def epoch_s(self, train_img_s: float, eval_img_s: float | None) -> float:
        scoring = self.eval_images / eval_img_s if eval_img_s else 0.0
        return self.train_images / train_img_s + scoring


def choose(cfg, model: torch.nn.Module, workload: Workload, autocast, *, world_size: int,
           cache: Path | None) -> Choice:
    """The variant of a CPU run: pinned keys win, then the cache, then a measurement."""
    pinned_cl, pinned_compile = cfg.channels_last, cfg.compile
    if pinned_cl is not None and pinned_compile is not None:
        return Choice(bool(pinned_cl), bool(pinned_compile), "pinned",
                      "channels_last and compile were given")
    default = Choice(bool(pinned_cl), bool(pinned_compile))
    if world_size > 1:
        default.why = "under torchrun each rank would time its neighbours' load"
        return default
    key = cache_key(cfg, workload)
    if cache is not None and (hit := cached_choice(read_cache(cache).get(key), cache)):
        if ((pinned_cl is None or hit.channels_last == bool(pinned_cl))
                and (pinned_compile is None or hit.compile == bool(pinned_compile))):
            return hit
    if workload.steps < MIN_RUN_STEPS:
        default.why = (f"a run of {workload.steps} steps is too short to repay a probe, and "
                       "this machine has not measured it yet")
        return default
    layouts = [bool(pinned_cl)] if pinned_cl is not None else [False, True]
    chosen = measure(model, workload, autocast, layouts, compile_too=pinned_compile is None
                     and not cfg.deterministic, pinned_compile=bool(pinned_compile))
    if cache is not None:
        write_cache(cache, key, chosen)
    return chosen


def measure(model, workload: Workload, autocast, layouts: list[bool], *, compile_too: bool,
            pinned_compile: bool) -> Choice:
    """Time every candidate; keep the shortest estimated epoch."""
    started = time.perf_counter()
    figures: dict[str, dict] = {}
    best_step = None
    for channels_last in layouts:
        f = time_variant(model, workload, autocast, channels_last, pinned_compile,
                         drop_above=None if best_step is None else DROP_SLOWER * best_step)
        figures[variant_label(channels_last, pinned_compile)] = f
        if not f.get("dropped"):
            best_step = min(best_step or f["step_s"], f["step_s"])
    timed = [k for k in figures if not figures[k].get("dropped")]
    if not timed:  # the probe itself failed: the run trains as it did before and says why
        return Choice(False, False, "default", "the probe failed: "
                      + "; ".join(f.get("error", "?") for f in figures.values()), figures)
    fastest = min(timed, key=lambda k: figures[k]["epoch_s"])
    channels_last = fastest.startswith("channels_last")
    eager_run_s = figures[fastest]["epoch_s"] * workload.epochs
    if compile_too and eager_run_s >= COMPILE_MIN_RUN_S:
        f = time_variant(model, workload, autocast, channels_last, True, drop_above=None)
        figures[variant_label(channels_last, True)] = f
        saved = (figures[fastest]["epoch_s"] - f.get("epoch_s", float("inf"))) * workload.epochs
        if not f.get("dropped") and saved > f["compile_s"]:
            fastest = variant_label(channels_last, True)
    return Choice(channels_last, fastest.endswith("compile"), "measured",
                  f"the shortest epoch of {len(figures)} timed in "
                  f"{time.perf_counter() - started:.1f} s", figures)


def settle(step, clock=time.perf_counter) -> tuple[list[float], float]:
    """Run ``step`` until its time settles (module constants), then time ``TIMED_STEPS`` more:
    (the warm-up steps' times, the median of the timed ones). ``clock``: for tests."""
    warm: list[float] = []
    while len(warm) < WARMUP_MAX:
        started = clock()
        step()
        warm.append(clock() - started)
        if len(warm) >= WARMUP_MIN:
            before = statistics.median(warm[-4:-1])
            if abs(warm[-1] - before) <= SETTLE * before:
                break
    timed = []
    for _ in range(TIMED_STEPS):
        started = clock()
        step()
        timed.append(clock() - started)
    return warm, statistics.median(timed)


def time_variant(model, workload: Workload, autocast, channels_last: bool, compiled: bool,
                 drop_above: float | None) -> dict:
    """Train and evaluation images/s of one candidate, on a copy of ``model``, after its warm-up
    (``settle``); dropped after its first steps when they take ``drop_above`` or longer each."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        probe = copy.deepcopy(model).cpu().to(memory_format=fmt)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((workload.batch, *workload.sample_shape), generator=gen)
        y = torch.randint(0, workload.num_classes, (workload.batch,), generator=gen)
        x = x.contiguous(memory_format=fmt)
        step_model = torch.compile(probe, dynamic=False) if compiled else probe
        optimizer = torch.optim.SGD(probe.parameters(), lr=0.0, momentum=0.9)
        probe.train()

        def step() -> None:
            train_step(step_model, optimizer, x, y, autocast)

        try:
            started = time.perf_counter()
            step()  # the first: primitives created, a compilation done
            first = time.perf_counter() - started
            started = time.perf_counter()
            step()
            second = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - a compiler missing here only drops a candidate
            return {"dropped": True, "train_img_s": 0.0, "error": str(exc).splitlines()[0][:200]}
        if drop_above is not None and second > drop_above:  # 8x slower on the AMD EPYC
            return {"dropped": True, "train_img_s": workload.batch / second, "step_s": second}
        warm, step_s = settle(step)
        eval_img_s = time_eval(probe, workload, autocast, fmt, gen)
    f = {"train_img_s": workload.batch / step_s, "eval_img_s": eval_img_s, "step_s": step_s,
         "epoch_s": workload.epoch_s(workload.batch / step_s, eval_img_s),
         "warmup_steps": 2 + len(warm)}
    if compiled:
        f["compile_s"] = max(0.0, first - step_s)
    return f


def train_step(model, optimizer, x, y, autocast) -> None:
    with autocast:
        out = model(x)
        branches = out if isinstance(out, tuple) else (out,)
        loss = sum(F.cross_entropy(z.float(), y) for z in branches)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def time_eval(probe, workload: Workload, autocast, fmt, gen,
              clock=time.perf_counter) -> float | None:
    """Images/s of scoring, eager as the run scores (``lt_bench.run.evaluate``), timed like
    training (``settle``). Three batches after two of warm-up were too few: the probe and the
    benchmark differed by -17 % and +47 % on the same CPU (docs/BENCHMARKS.md)."""
    if not workload.eval_images:
        return None
    probe.eval()
    x = torch.randn((workload.eval_batch, *workload.sample_shape), generator=gen)
    x = x.contiguous(memory_format=fmt)
    with autocast:
        _, batch_s = settle(lambda: probe(x), clock)
    return workload.eval_batch / batch_s


# -- the cache ----------------------------------------------------------------------------------
def cache_key(cfg, workload: Workload) -> str:
    """Machine, CPU, torch, backbone and what shapes the timing (precision, batch, threads)."""
    backbone = json.dumps(dict(cfg.backbone), sort_keys=True, default=str)
    parts = [PROBE_VERSION, platform.node(), cpu_model(), torch.__version__, backbone,
             str(workload.sample_shape), str(workload.num_classes), workload.precision,
             str(workload.batch), str(workload.eval_batch), str(torch.get_num_threads())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a missing or damaged cache costs one probe, never a run
    return data if isinstance(data, dict) else {}


def cached_choice(entry, path: Path) -> Choice | None:
    """The cache's entry as a choice; None (the run probes again) for one that is not what
    ``write_cache`` writes: any process of the user can write the file."""
    if entry is None:
        return None
    figures = entry.get("figures", {}) if isinstance(entry, dict) else None
    if (not isinstance(entry, dict)
            or not all(isinstance(entry.get(k), bool) for k in ("channels_last", "compile"))
            or not isinstance(entry.get("why", ""), str) or not isinstance(figures, dict)
            or not all(isinstance(f, dict) and "train_img_s" in f and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) or k == "dropped"
                for k, v in f.items()) for f in figures.values())):
        import logging

        logging.getLogger(__name__).warning(
            "the CPU variant cache %s holds an entry lt-bench did not write (%s): measuring "
            "again; delete the file if this repeats", path, str(entry)[:80])
        return None
    return Choice.from_dict(entry, "cached")


def write_cache(path: Path, key: str, choice: Choice) -> None:
    """Add the choice to the cache, written as run files are (a fresh temporary renamed over it,
    never through a link below the cache folder)."""
    entries = read_cache(path)
    entries[key] = {**choice.to_dict(), "cpu": cpu_model(), "torch": torch.__version__,
                    "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        write_file(path, json.dumps(entries, indent=1), root=path.parent)
    except (OSError, LtBenchError):
        pass  # an unwritable cache only means the next run probes again

"""The parts of the device check that run on the device, each in a child process
(``python -m benchmarks.device_check --worker KIND --spec JSON``): class-volume weights on the device against
float64 on the CPU, the training-step and evaluation speed of ResNet-32 in several settings, and
one process of the concurrency phase. Each result is one JSON line marked with ``MARK``, printed
as soon as it exists, so the parent keeps what was measured even if the process dies later.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

from benchmarks.device_check.common import MARK

BATCH = 100  # paper_cifar's batch size


def cifar10_lt_counts() -> list[int]:
    """CIFAR-10-LT IF 100's class counts (5000 … 50), as the data set builds them."""
    from lt_bench.data import lt_counts

    return lt_counts(5000, 10, 100.0)


def emit(record: dict) -> None:
    print(MARK + json.dumps(record, default=str), flush=True)


def failure(exc: BaseException) -> dict:
    tail = traceback.format_exc().rstrip().splitlines()[-10:]
    return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tail}


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_facts(device) -> dict:
    import torch

    facts = {"torch": torch.__version__, "device_type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                     capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                     memory_gib=round(props.total_memory / 2**30, 1),
                     cudnn=torch.backends.cudnn.version(),
                     bf16_supported=torch.cuda.is_bf16_supported())
    return facts


# -- 1a: class-volume weights ------------------------------------------------------------------
def volume_worker(spec: dict) -> None:
    """The same float32 logits through a criterion on the device and, as float64, on the CPU;
    the difference is then the device's arithmetic alone, not the rounding of the inputs."""
    import torch

    from lt_bench.api import build_method

    device = torch.device(spec["device"])
    emit({"facts": device_facts(device)})
    counts = cifar10_lt_counts()
    n = sum(counts)
    gen = torch.Generator().manual_seed(0)
    targets = torch.repeat_interleave(torch.arange(10), torch.tensor(counts))
    targets = targets[torch.randperm(n, generator=gen)]
    # class structure: each class its own centre and its own spread per logit axis, so the
    # radii, hence the weights, differ from class to class
    centres = torch.randn(10, 10, generator=gen, dtype=torch.float64) * 3.0
    centres += torch.eye(10, dtype=torch.float64) * 4.0
    spread = 0.3 + 2.0 * torch.rand(10, 10, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, 10, generator=gen, dtype=torch.float64)
    logits32 = (centres[targets] + noise * spread[targets]).float()
    logits64 = logits32.double()
    targets_dev = targets.to(device)
    logits_dev = logits32.to(device)
    for name in spec["methods"]:
        if time.time() > spec["deadline"]:
            emit({"method": name, "status": "skipped", "reason": "section deadline"})
            continue
        try:
            started = time.perf_counter()
            reference = build_method(name, counts, start_epoch=0).train()
            on_device = build_method(name, counts, start_epoch=0).to(device).train()
            for s in range(0, n, BATCH):
                reference(logits64[s:s + BATCH], targets[s:s + BATCH])
                on_device(logits_dev[s:s + BATCH], targets_dev[s:s + BATCH])
            # the raw float64 weights before end_epoch(), which forgets the statistics
            raw_ref = reference.raw_weights().double().cpu()
            raw_dev = on_device.raw_weights().double().cpu()
            raw_rel = float(((raw_dev - raw_ref).abs() / raw_ref.abs()).max())
            reference.end_epoch()
            on_device.end_epoch()
            w_ref = reference.class_weights.detach().double().cpu()
            w_dev = on_device.class_weights.detach().double().cpu()
            rel = float(((w_dev - w_ref).abs() / w_ref.abs()).max())
            # equal but uniform weights would mean no statistics were gathered on either side
            uniform = bool(torch.allclose(w_ref, torch.ones_like(w_ref)))
            emit({"method": name, "status": "ok", "max_rel_diff": rel,
                  "raw_max_rel_diff": raw_rel, "tolerance": spec["tolerance"],
                  "uniform": uniform, "passed": rel <= spec["tolerance"] and not uniform,
                  "weights_device": w_dev.tolist(), "weights_cpu_float64": w_ref.tolist(),
                  "seconds": round(time.perf_counter() - started, 3)})
        except Exception as exc:
            emit({"method": name, **failure(exc)})


# -- 2: speed --------------------------------------------------------------------------------------
class Setup:
    """ResNet-32, the ``ce`` criterion, SGD and one batch of 100 random 3×32×32 images on the
    device, in one variant's precision, memory format, optimizer and compile mode."""

    def __init__(self, variant: dict, device, backend: str | None = None, train: bool = True,
                 batch: int = BATCH):
        import torch

        from lt_bench.api import build_method
        from lt_bench.backbones import build_backbone

        self.device, self.variant = device, variant
        torch.manual_seed(0)
        fmt = torch.channels_last if variant.get("channels_last") else torch.contiguous_format
        self.model = build_backbone("resnet32", 10).to(device).to(memory_format=fmt)
        self.x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (batch,), device=device)
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                         if variant.get("precision") == "bf16" else nullcontext())
        self.forward = self.model
        self.mark = None
        if not train:
            self.model.eval()
            return
        self.criterion = build_method("ce", cifar10_lt_counts()).to(device).train()
        options = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
        if variant.get("fused"):
            options["fused"] = True
        self.optimizer = torch.optim.SGD(self.model.parameters(), **options)
        mode = variant.get("compile")
        if mode:
            # dynamic=False as the harness compiles: one graph per input shape
            kwargs = {"dynamic": False} if mode == "default" else {"dynamic": False, "mode": mode}
            if backend:
                kwargs["backend"] = backend
            from torch._dynamo.utils import counters

            counters.clear()  # per variant: compile_counters() reads them afterwards
            self.forward = torch.compile(self.model, **kwargs)
            if mode == "reduce-overhead":
                # each step's outputs are consumed within it; tell the CUDA graph trees so
                self.mark = torch.compiler.cudagraph_mark_step_begin

    def step(self):
        if self.mark is not None:
            self.mark()
        with self.autocast:
            loss = self.criterion(self.forward(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def timed(self, fn, count: int) -> float:
        synchronize(self.device)
        started = time.perf_counter()
        out = getattr(self, "last", None)
        for _ in range(count):
            out = fn()
        synchronize(self.device)
        self.last = out
        return time.perf_counter() - started


def train_variant(v: dict, device, counts: dict, backend: str | None) -> dict:
    s = Setup(v, device, backend)
    first = s.timed(s.step, 1)  # includes compilation for a compiled model
    warm = s.timed(s.step, max(0, counts["warm"] - 1))
    seconds = s.timed(s.step, counts["steps"])
    step_s = seconds / counts["steps"]
    loss = float(s.last.detach().float().item())
    rec = {"status": "ok", "steps": counts["steps"], "ms_per_step": 1000 * step_s,
           "img_per_s": BATCH / step_s, "first_step_s": first, "final_loss": loss,
           "loss_finite": math.isfinite(loss),
           "optimizer": "fused" if v.get("fused") else "default (foreach on CUDA)"}
    if v.get("compile"):
        rec["compile_s"] = max(0.0, first + warm - counts["warm"] * step_s)
        rec["backend"] = backend or "inductor"
        if s.mark is not None:
            s.mark()
        # Train mode and grad enabled, as in the timed steps, so no second graph is compiled;
        # BatchNorm then normalises with the batch's own statistics on both sides.
        with s.autocast:
            compiled = s.forward(s.x).detach().float().clone()
            eager = s.model(s.x).detach().float()
        diff = float((compiled - eager).abs().max())
        scale = float(eager.abs().max())
        tol = (5e-2 if v.get("precision") == "bf16" else 1e-3) * max(1.0, scale)
        rec.update(max_abs_diff_logits=diff, logits_max_abs=scale, tolerance=tol,
                   outputs_match=diff <= tol, **compile_counters())
    return rec


def compile_counters() -> dict:
    """Graph breaks, and the times CUDA graphs were skipped (reduce-overhead then runs without
    them): a fast compiled step means little if it is not the graph one thinks."""
    try:
        from torch._dynamo.utils import counters

        return {"graph_breaks": sum(counters["graph_break"].values()),
                "cudagraph_skips": counters["inductor"].get("cudagraph_skips", 0)}
    except Exception as exc:  # private counters: their names may change between releases
        return {"counters": f"unavailable ({type(exc).__name__})"}


def eval_variant(v: dict, device, counts: dict) -> dict:
    import torch

    batch = v["batch"]
    s = Setup(v, device, train=False, batch=batch)
    iters = counts["eval_iters_1000"] if batch >= 1000 else counts["eval_iters_100"]

    def forward():
        return s.model(s.x).argmax(dim=1)

    with torch.no_grad(), s.autocast:
        s.timed(forward, counts["eval_warm"])
        seconds = s.timed(forward, iters)
    return {"status": "ok", "batch": batch, "iters": iters, "img_per_s": iters * batch / seconds,
            "ms_per_batch": 1000 * seconds / iters}


def speed_worker(spec: dict) -> None:
    import torch

    device = torch.device(spec["device"])
    torch.backends.cudnn.benchmark = True  # as the harness does when not deterministic
    emit({"facts": {**device_facts(device), "cudnn_benchmark": True,
                    "threads": torch.get_num_threads()}})
    for v in spec["variants"]:
        name = v["name"]
        if time.time() > spec["deadline"]:
            emit({"variant": name, "status": "skipped", "reason": "section deadline"})
            continue
        emit({"begin": name})
        if os.environ.get("DEVICE_CHECK_CRASH") == name:
            os._exit(3)  # the tests' stand-in for a segfault or a dead CUDA context
        started = time.perf_counter()
        try:
            if v.get("kind") == "eval":
                rec = eval_variant(v, device, spec["counts"])
            else:
                rec = train_variant(v, device, spec["counts"], spec.get("compile_backend"))
        except Exception as exc:
            rec = failure(exc)
        rec.update(variant=name, wall_s=round(time.perf_counter() - started, 2))
        emit(rec)
        if v.get("compile"):
            torch._dynamo.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


# -- 2: one process of the concurrency phase ------------------------------------------------------
def throughput_worker(spec: dict) -> None:
    """Warm up, wait at a file barrier for the other processes, train for ``window_s``, then keep
    the device busy until every process has finished its window, so that no window is measured
    on a device the others have already left."""
    import torch

    device = torch.device(spec["device"])
    torch.backends.cudnn.benchmark = True
    s = Setup(spec["variant"], device)
    s.timed(s.step, spec["warm"])
    barrier, n, me = Path(spec["barrier"]), spec["n"], spec["index"]
    (barrier / f"ready.{me}").touch()
    waited = time.perf_counter()
    while len(list(barrier.glob("ready.*"))) < n and time.perf_counter() - waited < spec["max_wait_s"]:
        time.sleep(0.002)
    waited = time.perf_counter() - waited
    synchronize(device)
    started, wall_start, steps = time.perf_counter(), time.time(), 0
    while time.perf_counter() - started < spec["window_s"]:
        s.step()
        steps += 1
    synchronize(device)
    seconds = time.perf_counter() - started
    wall_end = time.time()
    (barrier / f"done.{me}").touch()
    linger = time.perf_counter()
    while len(list(barrier.glob("done.*"))) < n and time.perf_counter() - linger < spec["max_wait_s"]:
        s.step()
    synchronize(device)
    emit({"status": "ok", "index": me, "steps": steps, "seconds": seconds,
          "img_per_s": steps * BATCH / seconds, "barrier_wait_s": waited,
          "window_start": wall_start, "window_end": wall_end,
          "threads": torch.get_num_threads(), "pid": os.getpid()})


WORKERS = {"volume": volume_worker, "speed": speed_worker, "throughput": throughput_worker}


def run_worker(kind: str, spec_json: str) -> int:
    try:
        WORKERS[kind](json.loads(spec_json))
    except Exception as exc:  # the parent reads the record; the traceback goes to the log too
        emit({"fatal": True, **failure(exc)})
        traceback.print_exc()
        return 1
    return 0

"""What machine the device check runs on, and its GPU's utilisation and memory sampled while
a phase runs: through NVML (pynvml, no CUDA context in the parent) or nvidia-smi."""

from __future__ import annotations

import subprocess
import threading
import time

from lt_bench.workspace.provenance import cpu_model  # noqa: F401  (__main__ reads it from here)


def nvidia_smi(query: str) -> list[list[str]] | None:
    """``nvidia-smi --query-gpu=QUERY`` rows, or None where there is no usable nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return [[c.strip() for c in row.split(",")] for row in out.stdout.strip().splitlines()]


def nvml_reader():
    """A reader of (util %, MiB used) of GPU 0 through NVML (no CUDA context, no process per
    sample), else through nvidia-smi, else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)

        def read():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            return float(util), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

        read()
        return read, "nvml"
    except Exception:  # no pynvml, no driver, no GPU: try the command
        pass
    if nvidia_smi("utilization.gpu,memory.used") is None:
        return None, None

    def read_smi():
        rows = nvidia_smi("utilization.gpu,memory.used")
        return (float(rows[0][0]), float(rows[0][1])) if rows else None

    return read_smi, "nvidia-smi"


class GpuSampler:
    """GPU utilisation and memory every ``interval`` s in a thread, with time stamps, so that a
    phase can average only over the window in which all its processes were busy."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), util %, MiB)
        self._stop = threading.Event()
        self.read, self.source = nvml_reader()
        self.available = self.read is not None
        self._thread = threading.Thread(target=self._run, daemon=True, name="gpu-sampler")

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = self.read()
                if sample:
                    self.samples.append((time.time(), *sample))
            except Exception:  # one missed sample is no reason to stop sampling
                pass
            self._stop.wait(self.interval)

    def summary(self, start: float | None = None, end: float | None = None) -> dict:
        if not self.available:
            return {"gpu_util_mean": "n/a", "gpu_util_max": "n/a", "gpu_mem_max_mib": "n/a",
                    "samples": 0}
        window = [s for s in self.samples
                  if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
        if not window:
            window = self.samples
        if not window:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None,
                    "samples": 0}
        return {"gpu_util_mean": round(sum(s[1] for s in window) / len(window), 1),
                "gpu_util_max": max(s[1] for s in window),
                "gpu_mem_max_mib": round(max(s[2] for s in window)), "samples": len(window),
                "sampled_with": self.source}

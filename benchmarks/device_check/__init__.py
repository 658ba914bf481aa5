"""The GPU check: lt_bench on one rented GPU, in one command (``python -m benchmarks.device_check``).

Modules: ``__main__`` (the command and its sections), ``common`` (child processes, the log, the
report), ``runs`` (runs through the CLI: correctness, kill-and-resume, long runs), ``speed``
(training-step variants and concurrency), ``workers`` (what a worker child measures),
``projection`` (runs per hour), ``machine`` (GPU and CPU facts), ``markdown`` (the summary),
``data`` (the CIFAR-shaped synthetic data plugin). It needs torch and lt_bench, neither mlflow
nor omegaconf in its own process; benchmarks/device_check.md says how to run it.
"""

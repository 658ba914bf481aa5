"""Where a run computes: device defaults, the CPU variant and threads, the bf16 fence."""

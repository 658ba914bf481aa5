"""Sub-commands of ``lt-bench``: each module adds one parser (see ``lt_bench.cli``)."""

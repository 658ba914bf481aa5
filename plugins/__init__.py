"""lt_bench's built-in plugins, installed as ``lt_bench_plugins`` and found through the
``lt_bench`` entry-point group exactly as a third party's plugins are."""

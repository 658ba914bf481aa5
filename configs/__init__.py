"""lt_bench's group configs (dataset, backbone, method, protocol), installed as lt_bench_configs."""

"""Sweeps: a grid of training runs, run by local worker processes or as Ray tasks.

``expand`` turns the sweep's arguments into one list of ``key=value`` overrides per run:

* ``methods=[ce,dv]`` (sweep-only) → ``method=ce``, ``method=dv``; ``method=[ce,dv]`` too;
* ``seeds=3`` (sweep-only) → seeds 0, 1, 2; ``seeds=[0,5]`` → those seeds; ``seed=[0,5]`` too;
* any config key given a list (``imbalance=[100,200]``) is an axis of the grid; a key whose value
  is itself a list (``protocol.milestones``) is an axis only when given a list of lists.

Sweep-only options: ``jobs=N`` parallel local workers (processes, never threads; by default one
on a CPU and, on GPUs, four per GPU for ResNet-32, one per GPU otherwise), ``engine=local|
ray``, ``gpus_per_run=0.25`` and ``cpus_per_run=1`` (Ray resources), ``ray.address=auto|HOST:PORT``,
``baseline=ce`` and ``metric=final|best`` for the closing leaderboard.

A run whose (method, config hash, seed) is already FINISHED in the tracking store, or whose run
folder holds a finished ``results.json``, is skipped: an interrupted sweep resumes; the harness's
own checkpoint resumes the run that was half done.

The wing's modules, each importing only those above it in this list and the single run below:
``jobs`` (the records), ``grid`` (``expand``), ``trunks`` (the fork's plan), ``worker`` (one
worker process), ``workers`` (starting them), ``report`` and ``runner`` (``run_grid``,
``execute``); its closing leaderboard and picture are ``lt_bench.commands.sweep``'s. Nothing
of the single run (``lt_bench.run.train``) imports this package.
"""

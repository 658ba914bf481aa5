"""The extension contract of lt_bench: every hook a plugin may implement.

A plugin is a module (or object) with functions decorated by ``lt_bench.hookimpl`` and named
after the specs below. Each hook receives a ``register`` callback and calls it once per thing it
provides::

    import lt_bench

    @lt_bench.hookimpl
    def lt_bench_register_methods(register):
        register("my_method", MyMethod)

Plugins are found in three places (see ``lt_bench.registry``): the entry-point group
``lt_bench`` of installed distributions (the built-ins are found this way too), module names or
file paths given with ``--plugin``, the ``plugins:`` config key, or the ``LT_BENCH_PLUGINS``
environment variable. A hook whose name matches none of these specs is an error, so a misspelt
hook fails loudly instead of being ignored.

Every registered factory is called the same way, by ``Registry.build(kind, name, *args,
**options)``: its options are checked first against its keyword parameters (or, for a class
with an ``options()`` classmethod such as ``lt_bench.Method``, against what that returns), and an
unknown one is a one-line error with the closest valid name. A factory taking ``**options``
that it does not list is not checked.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lt_bench")
hookimpl = pluggy.HookimplMarker("lt_bench")


@hookspec
def lt_bench_register_methods(register):
    """Register re-weighting methods: ``register(name, factory)``.

    ``factory(class_counts, **options)`` returns an ``lt_bench.Method`` (a ``torch.nn.Module``).
    Usually ``factory`` is a subclass of ``lt_bench.Method``; its keyword-only ``__init__``
    parameters are the method's options (``lt-bench methods`` lists them with their defaults) and
    the first line of its docstring is the description. Pass the options you do not use on to
    ``super().__init__(class_counts, **options)``; set your attributes before or after that call,
    as you like: the first weights are computed once the whole ``__init__`` has run.

    A method may declare what more it needs, as class attributes the harness reads before it
    builds the run (``lt_bench.method.Method``): ``needs_features`` (the penultimate features
    are passed to ``loss``), ``head = "cosine"`` (the backbone's ``fc`` is swapped),
    ``meta_per_class`` (a balanced meta set is held out of training as ``data.meta``) and
    ``wants_look_ahead``/``look_ahead`` (given an ``lt_bench.run.lookahead.LookAhead`` each step,
    it returns per-sample weights). ``loss`` may be overridden for a batch loss that is not a
    weighted mean.

    A method's options also include its loss's (``loss="focal", gamma=1``):
    ``lt_bench.build_method`` builds the registered loss and passes it in as ``loss_fn``, so a
    method never looks anything up itself.
    """


@hookspec
def lt_bench_register_losses(register):
    """Register per-sample losses: ``register(name, factory)``.

    ``factory(class_counts, **options)`` returns a callable ``(logits, targets) -> loss`` of
    shape ``[B]`` (no reduction: the method applies its class weights and takes the mean). Any
    method can be combined with any loss through its ``loss=`` option.
    """


@hookspec
def lt_bench_register_datasets(register):
    """Register long-tailed data sets: ``register(name, factory)``.

    ``factory(cfg, *, imbalance)`` receives the ``data:`` settings (an
    ``lt_bench.data.DataConfig``) and the imbalance factor (None: as stored) and returns an
    ``lt_bench.data.LongTailedData`` (``TensorData`` for small images held on the device,
    ``LoaderData`` for files read by DataLoader workers).
    """


@hookspec
def lt_bench_register_backbones(register):
    """Register backbones: ``register(name, factory)``.

    ``factory(num_classes, **options)`` returns a ``torch.nn.Module`` whose ``forward(images)``
    gives logits ``[B, C]`` (or, for multi-branch heads in training mode, a tuple of them); a
    backbone whose ``forward`` takes ``return_features=False`` returns ``(logits, features)``
    when it is true, and one whose classifier is an ``nn.Linear`` named ``fc`` can have its head
    swapped, for methods that declare those needs. A
    factory that declares a ``class_names`` parameter also receives the data set's class names
    (a list of C strings; VL-LTR's text anchors need them); it is not a user option.
    """


@hookspec
def lt_bench_register_trackers(register):
    """Register experiment trackers: ``register(name, factory)``.

    ``factory(cfg)`` returns an ``lt_bench.tracking.Tracker`` that records one training run
    (``start``, ``log_metrics``, ``finish`` with the typed ``lt_bench.workspace.record.RunResult``) and
    reads runs back for the sweep and the leaderboard (``prepare``, ``finished_runs``,
    ``runs_for_leaderboard``). A subclass that does not override the read side inherits one
    that reads the run folders; an object without it makes the sweep skip by run folder only
    and ``lt-bench leaderboard`` say that it cannot read the tracker.
    """

"""A run's identity: the hash of what it computes (the resolved config less its bookkeeping),
which names its folder, groups its seeds and lets a sweep skip it. Imports no torch."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, ListConfig, OmegaConf

from lt_bench.data.copies import CIFAR_DATASETS
from lt_bench.data.groups import FEW, MANY

#: keys that do not change what a run computes, left out of its identity hash
NOT_HASHED = ("seed", "workspace", "tracking", "resume", "quiet", "log_every", "device", "plugins",
              "compile_mode", "eval_batch_size", "precision_used", "variant_used", "fork",
              "channels_last", "compile")
#: the variant keys compute the same function (lt_bench.device.cpu_variant) and are recorded with the
#: run (``variant``); lt_bench before data.copy hashed them (``config_hash(legacy=True)``)
LEGACY_HASHED = ("channels_last", "compile")
#: keys added after runs were recorded, hashed only away from their default, so that a recorded
#: run keeps its hash (and is still skipped by a sweep and grouped by the leaderboard)
#: (a section left empty is dropped: ``eval`` at its defaults hashes as a config without it).
#: The group thresholds train nothing differently, yet they are hashed when moved: the run's
#: many/medium/few numbers (results.json, MLflow, a trunk's replayed history) follow them, and
#: the leaderboard pools the seeds of one hash, so runs under other thresholds must not share it.
HASHED_WHEN_SET = {"data": {"pad_mode": "zero", "normalize": "dataset", "meta_per_class": 0,
                            "copy": "auto"},
                   "eval": {"many_above": MANY, "few_below": FEW}}


def config_hash(cfg: DictConfig | dict, legacy: bool = False) -> str:
    """A short hash of what the run computes: the resolved config without the seed and the
    bookkeeping keys, so the seeds of one setting share it. For CIFAR, ``data.copy`` names the
    pixels and ``data.root`` is left out (moving the data keeps the hash). ``legacy``: the hash
    of lt_bench before ``data.copy`` (root in, no copy), which ``lt-bench workspace upgrade``
    reads old folder names by."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else dict(cfg)
    for key in NOT_HASHED:
        if not (legacy and key in LEGACY_HASHED):
            d.pop(key, None)
    if isinstance(d.get("data"), dict):  # how the images arrive, not which: a copy, not the
        skip = {"download", "progress", "cache_dir"}  # caller's dict
        skip.add("copy" if legacy else "root" if d.get("dataset") in CIFAR_DATASETS else "")
        d["data"] = {k: v for k, v in d["data"].items() if k not in skip}
    for section, defaults in HASHED_WHEN_SET.items():
        if isinstance(d.get(section), dict):
            d[section] = {k: v for k, v in d[section].items()
                          if k not in defaults or v != defaults[k]}
            if not d[section]:
                del d[section]
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]

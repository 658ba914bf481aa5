"""Provenance of a run: the exact data it trained on, the code and machine it ran with, and how
each reported number was chosen; and the rule that runs on different data are never pooled.

A run's ``provenance`` (in ``results.json``, and as ``lt.<key>`` tags in MLflow; never part of
the config hash) holds:

* ``data_fingerprint``: 12 hex digits of sha256 over the three parts below. Two runs of one
  config can still have trained on different images: torchvision's pickled CIFAR-10 and a JPEG
  export of it hold the same pictures with different pixels, and a change in how the subset is
  drawn changes which images are kept. The parts say which:

  - ``data_indices_sha``: the training images' indices into their source, in training order,
    with their labels (the indices read "unknown" for a data set that does not give them);
  - ``data_counts_sha``: the class names with their training counts;
  - ``data_pixels_sha``: the decoded uint8 pixels of the training images: all of them where
    they are in memory (the CIFAR cache; ``DIGEST_BYTES`` at most), else a fixed sample, every
    k-th image from the first, decoded from its file (``DIGEST_DECODED`` at most);
    ``data_pixels_digested`` says which. The validation, meta and test sets are not part of it.

  Beside it, not part of it: ``data_copy`` (which copy of CIFAR: ``pickle``, ``webp``,
  ``jpeg``; ``lt_bench.data.copies``) and ``data_encoding`` (``lossless`` or ``jpeg q75
  4:2:0``; ``lt_bench.data.encoding``), None where the loader does not say.

* ``torch_version``, ``torchvision_version``, ``lt_bench_version``, ``lt_bench_commit`` (the
  commit of the git checkout the package was imported from, ``-dirty`` when the package's files
  differ from it; None outside a checkout), ``python_version``;
* ``device`` and ``device_name`` (the GPU's name, or the CPU's model), ``world_size``,
  ``batch_size`` (per process) and ``effective_batch_size`` (their product);
* ``selection``: how each reported number was chosen, ``{"final": "last epoch", "best": "best
  epoch on test"}`` (or ``on val``, see ``RunResult.best_chosen_on``).

Light on purpose (torch is imported inside the functions): the leaderboard and the study read
results without loading a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
SHORT = 12  # hex digits kept of each sha256: enough to tell apart the data sets of one store
#: the parts of the fingerprint, in the words a warning uses when they differ
PARTS = {"data_indices_sha": "indices", "data_counts_sha": "counts",
         "data_pixels_sha": "pixels"}
DATA_KEYS = ("data_fingerprint", *PARTS)
#: the keys of ``provenance`` that ``tags_of`` writes as ``lt.<key>`` (``selection`` as
#: ``lt.selection.final`` and ``lt.selection.best``)
SCALAR_KEYS = (*DATA_KEYS, "data_pixels_digested", "data_copy", "data_encoding",
               "torch_version", "torchvision_version", "lt_bench_version", "lt_bench_commit",
               "python_version", "device", "device_name", "world_size", "batch_size",
               "effective_batch_size")


def short_sha(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")  # ("ab", "c") and ("a", "bc") must differ
    return digest.hexdigest()[:SHORT]


# -- the data fingerprint ---------------------------------------------------------------------
def data_fingerprint(data: Any) -> dict[str, str]:
    """The fingerprint of a ``LongTailedData``'s training set and its parts (module docstring),
    computed once a data object: a run asks at its start (the checkpoint guard) and its end."""
    known = getattr(data, "_lt_fingerprint", None)
    if known is not None:
        return dict(known)
    import torch

    labels = torch.as_tensor(data.train_labels, dtype=torch.long).contiguous()
    indices = getattr(data, "source_indices", None)
    indices_bytes = (UNKNOWN.encode() if indices is None else
                     torch.as_tensor(indices, dtype=torch.long).contiguous().numpy().tobytes())
    pixels, digested = _pixels(data)
    parts = {
        "data_indices_sha": short_sha(b"indices", indices_bytes, b"labels",
                                      labels.numpy().tobytes()),
        "data_counts_sha": short_sha(json.dumps([[str(c) for c in data.classes],
                                                 [int(n) for n in data.train_counts]])),
        "data_pixels_sha": pixels[:SHORT] if pixels else UNKNOWN,
    }
    out = {"data_fingerprint": short_sha(*(parts[k] for k in PARTS)), **parts,
           "data_pixels_digested": digested,
           "data_copy": getattr(data, "copy", None),
           "data_encoding": getattr(data, "encoding", None)}
    try:
        data._lt_fingerprint = dict(out)
    except AttributeError:  # an object that takes no attributes: computed each time
        pass
    return out


def _pixels(data: Any) -> tuple[str | None, str]:
    digest = getattr(data, "pixel_digest", None)
    if not callable(digest):
        return None, "no pixels: not a LongTailedData"
    try:
        return digest()
    except Exception as exc:  # a record at the end of a finished run: never lose the run to it
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.warning("the pixel digest of the training set failed (%s); its fingerprint reads "
                    "the pixels as unknown", why)
        return None, f"no pixels: {why}"


# -- code, machine, selection -----------------------------------------------------------------
def lt_bench_commit(folder: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``folder`` (this package's by default), with
    ``-dirty`` when the folder's files differ from it; None when the folder is not tracked by
    git (an installed wheel, even one inside another repository) or git is absent."""
    folder = Path(folder or Path(__file__).parent)

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    tracked = git("ls-files", "--error-unmatch", "--", "__init__.py")
    head = git("rev-parse", "HEAD") if tracked is not None and tracked.returncode == 0 else None
    if head is None or head.returncode != 0:
        return None
    dirty = git("diff", "--quiet", "HEAD", "--", ".")
    return head.stdout.strip() + ("-dirty" if dirty is not None and dirty.returncode == 1 else "")


def versions() -> dict[str, str | None]:
    import torch

    import lt_bench

    try:
        import torchvision

        vision = str(torchvision.__version__)
    except Exception:  # a broken or missing torchvision never stops a finished run's record
        vision = None
    return {"torch_version": str(torch.__version__), "torchvision_version": vision,
            "lt_bench_version": str(lt_bench.__version__), "lt_bench_commit": lt_bench_commit(),
            "python_version": platform.python_version()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def device_name(device: Any) -> str:
    """The GPU's name on CUDA, else the CPU's model."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except Exception:  # no driver to ask: the record keeps the device type
            return "cuda"
    return cpu_model()


def selection_rule(best_chosen_on: str) -> dict[str, str]:
    return {"final": "last epoch", "best": f"best epoch on {best_chosen_on}"}


def gather(data: Any, device: Any, world_size: int, batch_size: int,
           best_chosen_on: str) -> dict[str, Any]:
    """The whole ``provenance`` of a run (module docstring)."""
    return {**data_fingerprint(data), **versions(), "device": str(device),
            "device_name": device_name(device), "world_size": int(world_size),
            "batch_size": int(batch_size), "effective_batch_size": int(batch_size * world_size),
            "selection": selection_rule(best_chosen_on)}


# -- the pooling rule -------------------------------------------------------------------------
def fingerprint(provenance: Mapping[str, Any] | None) -> str:
    """The data fingerprint of a provenance; ``unknown`` for a run recorded before it was."""
    value = (provenance or {}).get("data_fingerprint")
    return str(value) if value else UNKNOWN


def fingerprint_groups(results: Iterable[Any]) -> dict[str, list[Any]]:
    """``RunResult``s by data fingerprint, the largest group first (then by fingerprint): only
    the runs of one group may be pooled."""
    groups: dict[str, list[Any]] = {}
    for result in results:
        groups.setdefault(fingerprint(getattr(result, "provenance", None)), []).append(result)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def differing_parts(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Which parts (indices, counts, pixels) differ between the groups' provenances."""
    known = [members[0] for fp, members in groups.items() if fp != UNKNOWN and members]
    return [word for key, word in PARTS.items()
            if len({str(p.get(key, UNKNOWN)) for p in known}) > 1]


def split_warning(label: str, groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> str | None:
    """One line saying that runs of ``label`` are on more than one data set and are not pooled,
    naming each fingerprint and what differs; None for one data set. ``groups``: fingerprint
    → the provenances (or their data keys) of its runs."""
    groups = {fp: members for fp, members in groups.items() if members}
    if len(groups) < 2:
        return None
    counts = [f"{len(m)} run{'s' if len(m) != 1 else ''} on data {fp}"
              for fp, m in groups.items()]
    reasons = []
    if parts := differing_parts(groups):
        reasons.append(f"{' and '.join(parts)} differ")
    if UNKNOWN in groups:
        reasons.append(f"{UNKNOWN}: runs from before lt_bench recorded a fingerprint")
    return f"{label}: {', '.join(counts)} ({'; '.join(reasons) or 'data differ'}): not pooled"


def pooling_warning(label: str, results: Iterable[Any]) -> str | None:
    """``split_warning`` for ``RunResult``s (read from results.json)."""
    groups = fingerprint_groups(results)
    return split_warning(label, {fp: [getattr(r, "provenance", None) or {} for r in members]
                                 for fp, members in groups.items()})

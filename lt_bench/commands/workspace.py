"""``lt-bench workspace upgrade``: keep a workspace's runs and trunks when the config hash changes.

A CIFAR run's folder was named by a hash of its config that held ``data.root`` and not the copy
of CIFAR it read. Now it holds the copy (``data.copy``) and not the path
(``lt_bench.data.copies``). Upgrading writes each old run's and trunk's copy into its
``config.yaml`` (and its ``results.json``), and renames its folder to the new hash, so that a
sweep or a report finds it by name again instead of training it anew. The copy an old folder
read is the one the older lt_bench read at its ``data.root``: torchvision's pickles when they
are there, else the JPEG export (it knew no other); ``--copy`` says it where that folder is gone.
"""

from __future__ import annotations

import json
from pathlib import Path

from lt_bench.data.copies import CIFAR_DATASETS, find_copies
from lt_bench.errors import LtBenchError
from lt_bench.workspace.files import write_file


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "workspace", help="maintain a workspace (upgrade old run folders)",
        description="Maintain a workspace of runs.")
    ws_sub = parser.add_subparsers(dest="workspace_command", metavar="SUBCOMMAND")
    upgrade = ws_sub.add_parser(
        "upgrade", help="rename old CIFAR run and trunk folders to the hash that names the copy",
        description=__doc__.split("\n\n", 1)[1])
    upgrade.add_argument("workspace", type=Path, help="the workspace folder (holds runs/)")
    upgrade.add_argument("--copy", choices=("pickle", "webp", "jpeg"),
                         help="the copy the old runs read, where their data.root is gone")
    upgrade.add_argument("--dry-run", action="store_true", help="say what would change only")
    upgrade.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def old_copy(root: str, variant: str) -> str | None:
    """The copy lt_bench before ``data.copy`` read under ``root``: pickle, else jpeg."""
    found = find_copies(Path(root), variant)
    return next((c for c in ("pickle", "jpeg") if c in found), None)


def run(args) -> int:
    if not (args.workspace / "runs").is_dir() and not (args.workspace / "trunks").is_dir():
        raise LtBenchError(f"{str(args.workspace)!r} holds neither runs/ nor trunks/: give the "
                           "workspace folder (the one a run's workspace= names)")
    moved = kept = 0
    for folder in sorted([*args.workspace.glob("runs/*"), *args.workspace.glob("trunks/*")]):
        line = upgrade_folder(folder, args.copy, args.dry_run)
        if line:
            print(line)
            moved += line.startswith(("renamed", "would rename"))
            kept += not line.startswith(("renamed", "would rename"))
    verb = "would rename" if args.dry_run else "renamed"
    print(f"lt-bench: {verb} {moved} folder(s); {kept} left as they were")
    return 0


def upgrade_folder(folder: Path, copy: str | None, dry_run: bool) -> str | None:
    """Upgrade one run or trunk folder; the line saying what was done (None: nothing to do)."""
    from omegaconf import OmegaConf

    from lt_bench.config import config_hash  # here, not at the top: it imports omegaconf

    # here, not at the top: it imports omegaconf
    from lt_bench.workspace.layout import config_file, results_file

    path = config_file(folder)
    if folder.is_symlink() or not path.is_file() or path.is_symlink():
        return f"skipped {folder.name}: no config.yaml of its own"
    try:
        cfg = OmegaConf.load(path)
        variant = CIFAR_DATASETS.get(cfg.dataset)
    except Exception as exc:  # a file that is not a run's config: leave the folder alone
        return f"skipped {folder.name}: {path.name} unreadable ({type(exc).__name__})"
    if variant is None or cfg.data.get("copy", "auto") != "auto":
        return None  # not CIFAR (hash unchanged), or upgraded already
    old = config_hash(cfg, legacy=True)
    if old not in folder.name:
        return f"skipped {folder.name}: its name does not hold its config's hash {old}"
    copy = copy or old_copy(cfg.data.root, variant)
    if copy is None:
        return (f"skipped {folder.name}: no CIFAR under its data.root {cfg.data.root!r}, so "
                "the copy it read is unknown; pass --copy pickle|jpeg")
    cfg.data["copy"] = copy
    target = folder.with_name(folder.name.replace(old, config_hash(cfg), 1))
    if target.exists():
        return f"skipped {folder.name}: {target.name} exists already"
    if dry_run:
        return f"would rename {folder.name} -> {target.name} (data.copy={copy})"
    write_file(path, OmegaConf.to_yaml(cfg))
    record = results_file(folder)
    if record.is_file() and not record.is_symlink():
        _upgrade_record(record, config_hash(cfg), copy, target)
    folder.rename(target)
    return f"renamed {folder.name} -> {target.name} (data.copy={copy})"


def _upgrade_record(record: Path, cfg_hash: str, copy: str, target: Path) -> None:
    try:
        result = json.loads(record.read_text())
    except (OSError, ValueError):
        return  # the report says what is wrong with it
    if not isinstance(result, dict):
        return
    result["cfg_hash"] = cfg_hash
    if isinstance(result.get("run_dir"), str):  # where it ran, under its new name
        result["run_dir"] = str(Path(result["run_dir"]).with_name(target.name))
    if isinstance(result.get("provenance"), dict):
        result["provenance"].setdefault("data_copy", copy)
    write_file(record, json.dumps(result, indent=1))

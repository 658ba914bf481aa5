"""``lt-bench workspace upgrade`` on the project's own evidence: evidence/table1_if100 was named by
the hash of lt_bench before data.copy (data.root in it, the copy not) and upgraded with this
command. Undone by hand, upgraded again, it gives back the committed folders, and the report
finds its nine runs under the new names."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf

from lt_bench.cli import main
from lt_bench.config import config_hash

EVIDENCE = Path(__file__).parents[1] / "evidence" / "table1_if100"
#: the hashes of its folders as committed on 2026-12-05 (git history), before the upgrade
RECORDED = {"ce": "f8fe59f172", "dv": "21e61d848f", "effective_number": "5c8f4fcd89"}


def folders(ws: Path) -> list[Path]:
    return sorted([*ws.glob("runs/*"), *ws.glob("trunks/*")])


def test_upgrade_gives_back_the_committed_evidence(tmp_path, capsys):
    ws = tmp_path / "ws"
    for part in ("runs", "trunks"):
        shutil.copytree(EVIDENCE / part, ws / part)
    for folder in folders(ws):  # the lossless column beside it was never named the old way
        if OmegaConf.load(folder / "config.yaml").data["copy"] != "jpeg":
            shutil.rmtree(folder)
    committed = [f.name for f in folders(ws)]
    assert len(committed) == 12
    for folder in folders(ws):  # back to the old names, as an older lt_bench left them
        path = folder / "config.yaml"
        cfg = OmegaConf.load(path)
        assert config_hash(cfg) in folder.name and cfg.data["copy"] == "jpeg"
        assert config_hash(cfg, legacy=True) == RECORDED[
            "ce" if folder.parent.name == "trunks" else cfg.method.name]
        cfg.data.root = str(tmp_path / "moved")  # the data are not where they trained
        legacy = config_hash(cfg, legacy=True)
        assert legacy not in RECORDED.values()
        del cfg.data["copy"]
        path.write_text(OmegaConf.to_yaml(cfg))
        folder.rename(folder.with_name(folder.name.replace(_new(folder), legacy)))
    assert not {f.name for f in folders(ws)} & set(committed)
    # their data.root is gone here: the copy they read is said
    assert main(["workspace", "upgrade", str(ws)]) == 0
    assert "pass --copy pickle|jpeg" in capsys.readouterr().out
    assert main(["workspace", "upgrade", str(ws), "--copy", "jpeg"]) == 0
    assert "renamed 12 folder(s)" in capsys.readouterr().out
    assert [f.name for f in folders(ws)] == committed
    assert main(["reproduce", "zheng_ng_table1_if100", "--report-only", f"workspace={ws}",
                 "tracking.tracker=local", f"data.root={tmp_path / 'nowhere'}",
                 "data.copy=jpeg"]) == 0
    out = capsys.readouterr().out
    assert "32.1 ± 0.5 (3)" in out and "25.8 ± 0.2 (3)" in out and "25.1 ± 0.2 (3)" in out
    assert "pixels jpeg ≠ lossless" in out


def _new(folder: Path) -> str:
    """The hash in a folder's name: runs <data>-<method>-<hash>-seed<n>, trunks
    <data>-<hash>-seed<n>-epochs<e>."""
    parts = folder.name.split("-")
    return parts[-2] if folder.parent.name == "runs" else parts[-3]

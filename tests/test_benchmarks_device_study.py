"""``benchmarks/device_study.py --smoke`` end to end, as the GPU machine would run it: without
mlflow, the study's finished runs packed into runs.tar.gz, and, what the archive is for, those
runs reported again by ``lt-bench reproduce --report-only`` from a fresh workspace they are
unpacked into (benchmarks/device_check.md, "The study on a GPU")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "device_study.py"

# Loaded by every Python process of the run (the script, the study, its workers, the report):
# the device has no mlflow, so any attempt to import it is written down and fails.
NO_MLFLOW = """\
import os, sys

class NoMlflow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mlflow":
            with open(os.environ["NO_MLFLOW_LOG"], "a") as f:
                f.write(f"{os.getpid()} {name} {sys.argv[:3]}\\n")
            raise ImportError("no mlflow on the device")
        return None

sys.meta_path.insert(0, NoMlflow())
"""


def without_mlflow(tmp_path: Path) -> dict:
    site = tmp_path / "no_mlflow"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_MLFLOW)
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1",
            "NO_MLFLOW_LOG": str(tmp_path / "mlflow_imports.txt")}


def test_bad_arguments_are_one_line_naming_the_argument(tmp_path):
    for args, word in ((["--seeds", "0"], "--seeds"), (["seeds=3"], "seeds"),
                       (["--budget", "5"], "--budget"), (["--data-root", str(tmp_path / "x")],
                                                         "--data-root")):
        done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out"), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and word in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_smoke_brings_back_runs_that_report_again_at_home(tmp_path):
    env = without_mlflow(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--smoke", "--work", str(work)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert not (tmp_path / "mlflow_imports.txt").exists(), \
        (tmp_path / "mlflow_imports.txt").read_text()

    record = json.loads((out / "device_study.json").read_text())
    assert record["state"] == "finished" and record["study_exit"] == 0
    finished = sorted(r["run"] for r in record["finished"])
    assert len(finished) == 2 and not record["unfinished"]  # 2 rows x 1 seed
    assert record["torch"] and record["device_name"]
    with tarfile.open(out / "runs.tar.gz") as archive:
        names = archive.getnames()
    assert sorted(n for n in names if n.endswith("/results.json")) == \
        [f"runs/{r}/results.json" for r in finished]
    assert {"device_smoke.md", "device_smoke.png", "trunks.tar.gz"} <= set(record["files"])
    with tarfile.open(out / "trunks.tar.gz") as archive:
        assert any(n.endswith("/trunk.json") for n in archive.getnames())

    # at home: the command device_study.json gives, lt-bench as this interpreter's module
    home = tmp_path / "home"
    command = record["bring_home"].replace(
        "WS=workspace/gpu_device_smoke", f"WS={home}").replace(
        " lt-bench reproduce ", f" {sys.executable} -m lt_bench reproduce ")
    again = subprocess.run(["bash", "-c", command], cwd=out, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    rows = [line for line in again.stdout.splitlines() if line.startswith(("CE ", "DV "))]
    assert len(rows) == 2 and all("(1)" in row for row in rows), again.stdout
    assert not (tmp_path / "mlflow_imports.txt").exists()

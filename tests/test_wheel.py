"""The wheel ships all of lt-bench: built from this checkout, installed non-editable into a fresh
virtual environment (its dependencies seen from this one, nothing downloaded), and run from a
folder outside the checkout. Every other test runs the editable install, which finds a
sub-package whether or not the wheel would carry it (``lt_bench.sweep`` once was missing)."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    return next(out.glob("lt_bench-*.whl"))


def test_the_wheel_holds_every_package_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"lt_bench/{p.relative_to(ROOT / 'lt_bench')}" for p in (ROOT / "lt_bench").rglob("*.py")}
    wanted |= {f"lt_bench_plugins/{p.relative_to(ROOT / 'plugins')}"
               for p in (ROOT / "plugins").rglob("*.py")}
    wanted |= {f"lt_bench_configs/{p.relative_to(ROOT / 'configs')}"
               for p in (ROOT / "configs").rglob("*.yaml")}
    assert not {n for n in wanted if "__pycache__" not in n} - names


@pytest.mark.slow  # a virtual environment and two tiny training runs
def test_a_non_editable_install_sweeps_and_lists_the_studies(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    lt_bench = env_dir / "bin" / "lt-bench"
    where = subprocess.run([str(python), "-c", "import lt_bench, lt_bench.sweep; "
                            "print(lt_bench.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert where.stdout.startswith(str(env_dir)), where.stdout + where.stderr  # not the checkout
    listing = subprocess.run([str(lt_bench), "reproduce"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert "zheng_ng_table1_if100" in listing.stdout, listing.stdout + listing.stderr
    sweep = subprocess.run([str(lt_bench), "sweep", "dataset=synthetic_lt", "methods=[ce,dv]",
                            "seeds=1", "jobs=1", "protocol.epochs=1", "device=cpu",
                            "tracking.tracker=local", f"workspace={tmp_path / 'ws'}"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    assert len(list((tmp_path / "ws" / "runs").glob("*/results.json"))) == 2

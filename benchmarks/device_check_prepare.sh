#!/usr/bin/env bash
# Prepare the working tree for one run of python -m benchmarks.device_check on the bare GPU machine
# (Python 3.12, torch + CUDA, torchvision, scipy, pluggy, tqdm, matplotlib, pyyaml, numpy; no
# omegaconf, no mlflow, no internet). Run from the repository root, after the last edit to
# lt_bench/, plugins/ or configs/: the device runs the wheel built here, not the source.
#
#   bash benchmarks/device_check_prepare.sh            # .whl/ and .devdata/, then a local check
#   SKIP_VERIFY=1 bash benchmarks/device_check_prepare.sh
#
# Fills (both ignored by git; name them as the run's carried paths):
#   .whl/      omegaconf's wheel (and antlr4-python3-runtime's, for an omegaconf that needs it)
#              and lt_bench's own wheel, whose entry points register the built-in plugins
#   .devdata/  cifar10-jpeg.tar.gz from ../shared/data, when it is there
set -euo pipefail

if [[ ! -f pyproject.toml || ! -f benchmarks/device_check/__main__.py ]]; then
    echo "device_check_prepare: run this from the repository root" >&2
    exit 2
fi
PY=${PYTHON:-python3}
DATA=${DEVICE_DATA:-../shared/data}
mkdir -p .whl

# The wheels the device machine cannot get: the versions of this machine's own install, so the
# device runs what the tests here ran against.
fetch() {  # fetch NAME==VERSION: a Python 3.12 manylinux x86_64 (or pure-python) wheel
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$1"
}
# one version of each: two wheels of one package stop the whole install on the device
rm -f .whl/omegaconf-*.whl .whl/antlr4_python3_runtime-*.whl
omegaconf=$("$PY" -c 'import importlib.metadata as m; print(m.version("omegaconf"))')
echo "omegaconf $omegaconf"
fetch "omegaconf==$omegaconf"
# omegaconf 2.3 needs antlr4-python3-runtime 4.9.*; 2.4 vendors it. Ask the metadata, not a guess.
antlr=$("$PY" - <<'EOF'
import importlib.metadata as m
for req in m.requires("omegaconf") or []:
    if req.lower().startswith("antlr4-python3-runtime") and "extra ==" not in req:
        print(req.split(";")[0].replace(" ", ""))
EOF
)
if [[ -n "$antlr" ]]; then
    echo "omegaconf requires $antlr"
    # 4.9.3 exists on PyPI as an sdist only: then a pure-python wheel is built here
    fetch "$antlr" 2>/dev/null || "$PY" -m pip wheel -q --no-deps -w .whl "$antlr"
fi

# lt_bench itself: the entry points in its dist-info are how the built-in plugins are found
rm -f .whl/lt_bench-*.whl
had_build=$([[ -d build ]] && echo 1 || true)
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
[[ -n "$had_build" ]] || rm -rf build  # setuptools' in-tree leftovers, not ours to keep
ls -l .whl

if [[ -f "$DATA/cifar10-jpeg.tar.gz" ]]; then
    mkdir -p .devdata
    cp -f "$DATA/cifar10-jpeg.tar.gz" .devdata/
    chmod u+w .devdata/cifar10-jpeg.tar.gz
    if [[ -f "$DATA/SHA256SUMS" ]]; then
        sums=$(realpath "$DATA/SHA256SUMS")
        (cd .devdata && sha256sum -c --quiet --ignore-missing "$sums")
    fi
    echo ".devdata: $(du -h .devdata/cifar10-jpeg.tar.gz | cut -f1) CIFAR-10 archive"
else
    echo "no $DATA/cifar10-jpeg.tar.gz: the device check will use generated CIFAR-shaped data"
fi

if [[ -n "${SKIP_VERIFY:-}" ]]; then
    exit 0
fi
# The device's install command, into a scratch target, then the check's imports from a folder
# where the repository is not on sys.path and with mlflow made unimportable, as on the device.
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$target" .whl/*.whl
repo=$(pwd)
(cd "$target" && PYTHONPATH="$target" "$PY" - "$repo" "$target" <<'EOF'
import sys
sys.modules["mlflow"] = None  # absent on the device: any import of it now fails
sys.path.append(sys.argv[1])  # the check's package, after the wheel's lt_bench
import omegaconf, lt_bench, lt_bench.train  # noqa: E401,F401
from lt_bench.config import load_config
from lt_bench.registry import get_registry
from lt_bench.assemble import check_names
import benchmarks.device_check.__main__, benchmarks.device_check.workers  # noqa: E401,F401
assert lt_bench.__file__.startswith(sys.argv[2]), f"lt_bench is not the wheel's: {lt_bench.__file__}"
cfg = load_config([], ["dataset=cifar10_lt", "method=dv", "protocol=paper_cifar",
                       "tracking.tracker=local", "precision=auto"])
check_names(cfg)
names = sorted(get_registry().table("methods"))
assert {"ce", "dv", "pv", "bv"} <= set(names), names
print(f"wheel route ok: lt_bench from {lt_bench.__file__}, omegaconf {omegaconf.__version__}, "
      f"{len(names)} methods, mlflow not needed")
EOF
)
echo "carry: .whl .devdata"

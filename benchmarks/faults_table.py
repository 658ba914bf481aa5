"""The adversarial cases of the faults issue, run as a user would: what each does now, and how
long it takes to fail.

    python benchmarks/faults_table.py OUT.md [ONLY]    # ONLY: the cases whose name holds it

Each case is a command line (``lt-bench ...``, or ``python -c`` for the API cases) run in a
fresh temporary workspace. The table gives the exit code, the first line of what it printed to
stderr (or the check's verdict) and the wall time to that exit, Python start and imports
included (``lt-bench --version`` is timed first as the floor). The concurrency cases (two
sweeps on one workspace, ``kill -9`` of a sweep) and a server lost mid-run need processes
that live a while: tests/test_sweep.py and tests/test_tracking_server.py run them. The cases of
reliability round 2 (issue 27) are in ``faults_round2.py``, those of round 3 (issue 35:
studies, anchors, configs, paths) in ``faults_round3.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faults_round2
import faults_round3

TINY = "dataset=synthetic_lt tracking.tracker=local quiet=true protocol.epochs=1"
API = "import torch, lt_bench; "



def train(extra: str) -> str:
    return f"lt-bench train {TINY} {extra} workspace={{ws}}"


def plant(write: str) -> str:
    """Write a file into the run folder of the tiny run (``write`` sees it as ``d``), then
    train that run."""
    return ("python -c \"import os; from lt_bench.config import load_config; from lt_bench.workspace.layout import run_folder; "
            f"c = load_config([], '{TINY} workspace={{ws}}'.split()); d = run_folder(c); "
            f"os.makedirs(d); {write}\" && lt-bench train {TINY} workspace={{ws}}")


#: (case, the command; {ws} is a fresh workspace, {tmp} a scratch folder)
CASES = [
    ("1 planted pickle as checkpoint.pt",
     plant("open(d / 'checkpoint.pt', 'wb').write(__import__('pickle').dumps({{'m': "
           "__import__('builtins').__dict__['open']}}))")),
    ("2 omegaconf.py in the sweep's folder",
     "cd {tmp} && echo 'raise SystemExit(99)' > omegaconf.py && lt-bench sweep " + TINY +
     " methods=[ce] workspace={ws}"),
    ("3 tracking.uri unreachable", "lt-bench train " + TINY.replace("tracking.tracker=local", "")
     + " tracking.tracker=mlflow tracking.uri=http://127.0.0.1:1 workspace={ws}"),
    ("4 a key typed before its group: protocol.epochs=3 protocol=quick",
     "python -c \"from lt_bench.config import load_config; "
     "c = load_config([], ['protocol.epochs=3', 'protocol=quick']); "
     "print('epochs', c.protocol.epochs)\""),
    ("5 data.num_classes=0", train("data.num_classes=0")),
    ("6 protocol.lr=1e6", train("protocol.lr=1e6 protocol.warmup_epochs=0")),
    ("6 protocol.lr_decay=-1", train("protocol.lr_decay=-1")),
    ("7 API: empty batch", "python -c \"" + API + "m = lt_bench.build_method('ce', [3, 1]); "
     "m(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))\""),
    ("7 API: logit_adjusted tau=nan", "python -c \"" + API +
     "lt_bench.build_method('logit_adjusted', [3, 1], tau=float('nan'))\""),
    ("8 protocol.lr=-1", train("protocol.lr=-1")),
    ("8 protocol.weight_decay=-1", train("protocol.weight_decay=-1")),
    ("8 device=gpu0", train("device=gpu0")),
    ("8 protocol.eval_every=0", train("protocol.eval_every=0")),
    ("8 log_every=0", train("log_every=0")),
    ("8 workspace is a file", "touch {tmp}/f && lt-bench train " + TINY + " workspace={tmp}/f"),
    ("8 workspace read-only", "mkdir -p {tmp}/ro && chmod 555 {tmp}/ro && lt-bench train " + TINY
     + " workspace={tmp}/ro/ws"),
    ("9 checkpoint of another structure",
     plant("__import__('torch').save({{'x': 1}}, d / 'checkpoint.pt')")),
    ("10 lt-bench ui --port 99999", "lt-bench ui --port 99999 workspace={ws}"),
    ("10 lt-bench ui on a taken port",
     "python -c \"import socket, subprocess, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
     "s.listen(); p = s.getsockname()[1]; sys.exit(subprocess.call(['lt-bench', 'ui', "
     "'--port', str(p), 'workspace={ws}']))\""),
    ("11 API: float targets", "python -c \"" + API + "m = lt_bench.build_method('ce', [3, 1]); "
     "m(torch.zeros(2, 2), torch.zeros(2))\""),
    ("11 API: state of another class count", "python -c \"" + API +
     "a = lt_bench.build_method('dv', [3, 1]); b = lt_bench.build_method('dv', [3, 1, 1]); "
     "b.load_state_dict(a.state_dict())\""),
    ("11 API: a class with identical logits", "python -c \"" + API +
     "m = lt_bench.build_method('dv', [5, 5], substitute_below=0); x = torch.randn(10, 2); "
     "x[:5] = 1.0; m(x, torch.tensor([0] * 5 + [1] * 5)); m.end_epoch(); "
     "print('weights', [round(w, 6) for w in m.class_weights.tolist()])\""),
    ("12 method.beta=1.5 data.root=/nonexistent",
     "lt-bench train dataset=cifar10_lt method=effective_number method.beta=1.5 "
     "data.root=/nonexistent tracking.tracker=local workspace={ws}"),
]


def run(command: str, ws: Path, tmp: Path, save: bool = True) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = subprocess.run(command.format(ws=ws, tmp=tmp), shell=True, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - started
    if save:  # for the case's check to read
        (tmp / "output.txt").write_text(proc.stdout + proc.stderr)
    said = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    said = said or [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return proc.returncode, (said[-1] if said else "")[:220], seconds


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("faults_table.md")
    rows = []
    with tempfile.TemporaryDirectory(prefix="faults-") as top:
        floor = run("lt-bench --version", Path(top), Path(top))[2]
        for i, (case, command, *more) in enumerate(CASES + faults_round2.CASES + faults_round3.CASES):
            if len(sys.argv) > 2 and sys.argv[2] not in case:
                continue
            check = more[0] if more else ""
            ws, tmp = Path(top) / f"ws{i}", Path(top) / f"tmp{i}"
            tmp.mkdir()
            code, said, seconds = run(command, ws, tmp)
            if check:  # what the command did, beside what it said
                said = f"{said} · {run(check, ws, tmp, save=False)[1]}"
            rows.append(f"| {case} | {code} | {said.replace('|', '/')} | {seconds:.1f} |")
            print(rows[-1], flush=True)
    head = (f"Measured {time.strftime('%Y-%m-%d')} on this machine ({os.cpu_count()} cores); "
            f"`lt-bench --version` alone takes {floor:.1f} s.\n\n"
            "| case | exit | what the user sees (last line) | seconds to exit |\n|---|---|---|---|")
    out.write_text(head + "\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

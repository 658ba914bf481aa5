"""Run a study with `python -m lt_bench reproduce` on the GPU machine until its budget less 40 s,
stop it (SIGINT, then SIGKILL), report it with --report-only, and leave in OUT_DIR, rewritten as
it goes: runs.tar.gz (every finished run's runs/<name>/results.json and config.yaml, to unpack
into a workspace), trunks.tar.gz (trunk checkpoints, up to 15 MiB), logs.tar.gz (the workers' log
tails), the report's .md and .png, device_study.json and device_study.log. The work folder is
kept: the same command again resumes. Issue 24, part 4; benchmarks/device_check.md says how.
Standard library only: the device has no mlflow, and omegaconf only as a wheel for lt_bench."""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARGIN_S = 40  # before the budget's end: the SIGINT grace, the report (a torch import), packing
GRACE_S = 8.0  # after SIGINT, before SIGKILL: the runs record themselves KILLED
POLL_S = 5.0
LOG_CAP = 8 * 2**20  # a file over 16 MiB does not come back at all
TRUNKS_CAP = 15 * 2**20
TRUNK_FILES = ("checkpoint.pt", "config.yaml", "trunk.json", "progress.json")  # what resumes it
LOG_TAIL = 64 * 2**10
#: the data.root the runs record, linked to --data-root. Every run's config hash includes it, so
#: a report finds runs under the key they were trained with: this is the evidence sweep's (issue
#: 24, part 3, evidence/table1_if100), whose trunks and runs then share the device's folder names.
DATA_KEY = "/work/shared/data"
SMOKE_KEY = "../shared/data"  # relative to the child's folder: the smoke touches nothing outside
SET_HERE = {"workspace": "--work", "tracking.tracker": "always local", "seeds": "--seeds",
            "jobs": "--jobs", "data.root": "--data-root", "device": "--device"}
SMOKE_STUDY = (  # YAML in flow style
    '{name: device_smoke, title: "device_study smoke", protocol: quick, statistic: best, '
    'columns: [{label: "synthetic IF 20", dataset: synthetic_lt, imbalance: 20}], rows: [{label: '
    'CE, method: ce}, {label: DV, method: dv, options: {convention: authors}}], cells: {CE: '
    '["40.0 ± 1.0"], DV: ["35.0 ± 1.0"]}, paper_seeds: 30, claims: [{better: DV, than: [CE]}]}\n')
#: a 1-epoch trunk and 2-epoch branches: the fork's whole path in seconds a run
SMOKE_ARGS = ["protocol.epochs=3", "protocol.start_epoch=2", "protocol.milestones=[2]",
              "protocol.batch_size=64", "protocol.lr=0.05", "protocol.warmup_epochs=0",
              "precision=fp32"]


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the argument; not the optional KEY=VALUE list
        print(f"device_study: error: {message.replace(', KEY=VALUE', '')}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(
        description=__doc__,
        epilog="exit status: 0 done (also when stopped at the deadline), 1 the study or its "
               "report failed, 2 a usage error, 130 stopped by a signal. See "
               "benchmarks/device_check.md.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where the results go ($OUT on the device)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="more config for every run, e.g. precision=fp32 compile=false")
    p.add_argument("--study", default="zheng_ng_table1_if100",
                   help="a shipped study's name or a study YAML (default %(default)s)")
    p.add_argument("--budget", type=float, default=480.0, metavar="SECONDS",
                   help="the whole command's time, packing included (default %(default)g)")
    p.add_argument("--seeds", metavar="N|FIRST-LAST", help="seeds per cell: a count from 0, or a "
                   "range, e.g. 3-4 (default 2, what fits one 540-s call on an H100; 1 --smoke)")
    p.add_argument("--jobs", type=int, metavar="J", help="runs at once (default 8 on cuda, 2 on cpu)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--data-root", metavar="DIR", help="the folder holding cifar10-jpeg.tar.gz "
                   "(default .devdata in the repository)")
    p.add_argument("--data-key", metavar="PATH", help="the data.root the runs record (hashed "
                   f"into their folders' names), a link to --data-root (default {DATA_KEY})")
    p.add_argument("--work", metavar="DIR", help="the work folder: workspace, report, data link "
                   "(default .devwork in the repository; keep it to resume)")
    p.add_argument("--smoke", action="store_true", help="a two-row study on generated data on "
                   "the CPU, in well under a minute: the whole path, for CI")
    return check_args(p, p.parse_args(argv))


def check_args(p: OneLineParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.budget < MARGIN_S + 20:
        p.error(f"argument --budget: {args.budget:g} s leaves no time to train "
                f"(give at least {MARGIN_S + 20})")
    if args.jobs is not None and args.jobs < 1:
        p.error(f"argument --jobs: give a count >= 1, got {args.jobs}")
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", args.seeds or ("1" if args.smoke else "2"))
    first, last = (0, -1) if not m else (0, int(m[1]) - 1) if not m[2] else (int(m[1]), int(m[2]))
    if last < first:
        p.error(f"argument --seeds: give a count >= 1 or a range FIRST-LAST, got {args.seeds!r}")
    args.seeds = list(range(first, last + 1))
    for item in args.overrides:
        key = item.partition("=")[0]
        if "=" not in item or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            p.error(f"argument KEY=VALUE: {item!r} is not KEY=VALUE")
        if key in SET_HERE:
            p.error(f"argument KEY=VALUE: {key} is set by this command ({SET_HERE[key]})")
    args.device = "cpu" if args.smoke else args.device
    args.jobs = args.jobs or (8 if args.device == "cuda" else 2)
    args.work = Path(args.work or REPO / ".devwork").expanduser().resolve()
    study = Path(args.study).expanduser()
    if study.is_file():
        args.study = str(study.resolve())  # the child runs in another folder
    elif not args.smoke and not (REPO / "configs" / "study" / f"{args.study}.yaml").is_file():
        p.error(f"argument --study: {args.study!r} is neither a file nor a shipped study")
    # generated data in the smoke study: the data link only has to point at a folder
    root = args.work if args.smoke else args.data_root or REPO / ".devdata"
    args.data_root = Path(root).expanduser().resolve()
    if not args.smoke and not args.data_root.is_dir():
        p.error(f"argument --data-root: {args.data_root} is not a folder (fill .devdata with "
                "benchmarks/device_check_prepare.sh, or name the folder of the data)")
    args.data_key = args.data_key or (SMOKE_KEY if args.smoke else DATA_KEY)
    link = args.data_link = Path(os.path.normpath(args.work / "cwd" / args.data_key))
    if link.exists() and not link.is_symlink() and link.resolve() != args.data_root:
        p.error(f"argument --data-key: {link} exists and is not --data-root {args.data_root}")
    return args


def write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)  # a command killed now leaves the old file whole, never half of one


def read_json(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


class Log:
    """Lines to stdout (flushed: the tool may cut us off) and to OUT_DIR/device_study.log."""

    def __init__(self, path: Path):
        self.t0, self.lock, self.written = time.monotonic(), threading.Lock(), 0
        self.file = open(path, "a", encoding="utf-8", buffering=1)

    def __call__(self, text: str, prefix: str = "device_study") -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] [{prefix}] {text.rstrip()}"
        with self.lock:
            print(line, flush=True)
            self.written += len(line) + 1
            if self.written <= LOG_CAP:  # the rest is on stdout, the reply's output tail
                self.file.write(line + "\n")


class Study:
    """The work folder, the child's command line, and the record of what happened."""

    def __init__(self, args: argparse.Namespace, out: Path, log: Log):
        self.args, self.out, self.log, self.t0 = args, out, log, log.t0
        self.workspace = args.work / "workspace"
        self.cwd, self.report_dir = args.work / "cwd", args.work / "report"
        self.seen: dict[str, float | None] = {}  # finished run → when first seen (None: before)
        study = str(args.work / "device_smoke.yaml") if args.smoke else args.study
        seeds = "[" + ",".join(map(str, args.seeds)) + "]"
        self.run_args = [f"seeds={seeds}", f"data.root={args.data_key}", f"device={args.device}",
                         *(SMOKE_ARGS if args.smoke else []), *args.overrides]
        self.base = [sys.executable, "-m", "lt_bench", "reproduce", study, *self.run_args,
                     f"workspace={self.workspace}", "tracking.tracker=local",
                     "--out", str(self.report_dir)]
        # the hashed keys as the runs had them, so that the report finds the runs' folders
        home = (f'WS=workspace/gpu_{Path(study).stem}; mkdir -p "$WS" && tar xzf runs.tar.gz -C '
                f'"$WS" && lt-bench reproduce {shlex.quote(study)} --report-only workspace="$WS" '
                + shlex.join(["tracking.tracker=local", *(a for a in self.run_args
                                                          if a[:7] != "device=")]))
        self.record = {
            "study": study, "device": args.device, "smoke": args.smoke, "seeds": args.seeds,
            "jobs": args.jobs, "budget_s": args.budget, "stop_at_s": args.budget - MARGIN_S,
            "data_root": str(args.data_root), "data_key": args.data_key, "overrides": args.overrides,
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "bring_home": home,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def prepare(self) -> None:
        """The child's folder, and the data key (relative to that folder, or absolute) a link to
        the data: the runs record the key and read the data from wherever it is here."""
        link = self.args.data_link
        for folder in (self.cwd, self.workspace, self.report_dir, link.parent):
            folder.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        if not link.exists():  # else it is the data itself (checked by check_args)
            link.symlink_to(self.args.data_root, target_is_directory=True)
        if self.args.smoke:
            write_atomic(Path(self.record["study"]), SMOKE_STUDY)
        for old in self.report_dir.glob("*"):  # the report is this call's or none
            old.unlink()
        self.seen = {name: None for name in self.finished()}
        self.trunks_done = {t["name"] for t in self.folders("trunks") if t["finished"]}

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def finished(self) -> list[str]:
        return [p.parent.name for p in sorted(self.workspace.glob("runs/*/results.json"))
                if read_json(p).get("status") == "FINISHED"]

    def folders(self, kind: str) -> list[dict]:
        """Each run or trunk folder, whether it finished, and its epoch (progress.json)."""
        rows = []
        for folder in sorted(self.workspace.glob(f"{kind}/*")):
            progress = read_json(folder / "progress.json")
            done = (folder.name in self.seen if kind == "runs"
                    else "epochs" in read_json(folder / "trunk.json"))
            rows.append({"name": folder.name, "finished": done,
                         "epoch": progress.get("epoch"), "epochs": progress.get("epochs")})
        return rows

    def scan(self) -> bool:
        """Record newly finished runs and trunks; True when there are new ones."""
        new = [n for n in self.finished() if n not in self.seen]
        trunks = {t["name"] for t in self.folders("trunks") if t["finished"]} - self.trunks_done
        for name in new + sorted(trunks):
            self.log(f"finished: {name}")
        self.seen.update((name, self.elapsed()) for name in new)
        self.trunks_done |= trunks
        return bool(new or trunks)

    def save(self, state: str) -> None:
        self.record.update(
            state=state, elapsed_s=self.elapsed(),
            finished=[{"run": n, "seen_at_s": t} for n, t in self.seen.items()],
            unfinished=[{"run": r["name"], "epoch": r["epoch"], "epochs": r["epochs"]}
                        for r in self.folders("runs") if not r["finished"]],
            trunks=self.folders("trunks"),
            files=sorted(p.name for p in self.out.iterdir() if not p.name.startswith(".")))
        write_atomic(self.out / "device_study.json", json.dumps(self.record, indent=1) + "\n")

    def pack(self, trunks: bool) -> None:
        """runs.tar.gz (named as in a workspace), logs.tar.gz, and maybe trunks.tar.gz (MBs)."""
        members = [self.workspace / "runs" / n / f for n in self.seen
                   for f in ("results.json", "config.yaml")]
        tar(self.out / "runs.tar.gz", self.workspace, [m for m in members if m.is_file()])
        tar(self.out / "logs.tar.gz", self.workspace,
            sorted(self.workspace.glob("sweeps/logs/*.log")), tail=LOG_TAIL)
        if trunks:
            self.pack_trunks()

    def pack_trunks(self) -> None:
        # finished trunks first, then the furthest unfinished: each is epochs not trained again
        rows = sorted(self.folders("trunks"), key=lambda r: (not r["finished"], -(r["epoch"] or 0)))
        members, left = [], []
        for row in rows:
            folder = self.workspace / "trunks" / row["name"]
            files = [folder / f for f in TRUNK_FILES if (folder / f).is_file()]
            if files[:1] == [folder / TRUNK_FILES[0]] and \
                    sum(f.stat().st_size for f in members + files) <= TRUNKS_CAP:
                members += files
            else:
                left.append(row["name"])
        if members:
            tar(self.out / "trunks.tar.gz", self.workspace, members, level=1)
        self.record["trunks_left_out"] = left


def tar(path: Path, root: Path, members: list[Path], tail: int = 0, level: int = 6) -> None:
    """``members`` named relative to ``root`` (``tail``: their last bytes), never half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=level) as archive:
        for member in members:
            try:
                data, mtime = member.read_bytes()[-tail:], int(member.stat().st_mtime)  # 0: all
            except OSError:
                continue  # replaced under us: the next pack has it
            info = tarfile.TarInfo(str(member.relative_to(root)))
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            archive.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


class Child:
    """A command in its own process group, its output streamed line by line into the log."""

    def __init__(self, cmd: list[str], cwd: Path, log: Log, name: str):
        log("$ " + shlex.join(cmd))
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_own_group,
                                     text=True, errors="replace")
        self.reader = threading.Thread(target=lambda: [log(line, name) for line in
                                                       self.proc.stdout], daemon=True)
        self.reader.start()

    def stop(self) -> None:
        """SIGINT to the group (runs record KILLED), then SIGKILL for whatever outlived it."""
        for sig, wait in ((signal.SIGINT, GRACE_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.reader.join(timeout=2)


def _own_group() -> None:
    os.setpgrp()
    try:  # should this script be killed outright, the study is interrupted, not orphaned
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


STOP = threading.Event()  # set by SIGTERM (the tool's timeout) or Ctrl-C: stop, pack what there is


def train(study: Study) -> int | None:
    """The study until it ends or the deadline; its exit status (None: stopped here)."""
    child = Child(study.base + [f"jobs={study.args.jobs}"], study.cwd, study.log, "reproduce")
    deadline = study.t0 + study.args.budget - MARGIN_S
    next_scan = 0.0
    while child.proc.poll() is None:
        if STOP.is_set() or time.monotonic() >= deadline:
            study.log("signal: stopping the study" if STOP.is_set() else
                      "deadline: stopping the study (SIGINT, then SIGKILL)")
            child.stop()
            study.record["stopped_at_s"] = study.elapsed()
            return None
        time.sleep(0.5)
        if time.monotonic() >= next_scan:
            next_scan = time.monotonic() + POLL_S
            if study.scan():
                study.pack(trunks=True)
            study.save("training")
    child.reader.join(timeout=5)
    return child.proc.returncode


def device_facts(study: Study) -> dict:
    """torch and the device as a finished run's provenance names them, else as torch's metadata
    and nvidia-smi do (this script imports no torch: seconds, and a CUDA context)."""
    for name in study.seen:
        prov = read_json(study.workspace / "runs" / name / "results.json").get("provenance")
        if isinstance(prov, dict) and prov.get("torch_version"):
            return {"torch": prov["torch_version"], "device_name": prov.get("device_name")}
    try:
        smi = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        gpu = study.args.device == "cuda" and subprocess.run(
            smi, capture_output=True, text=True, timeout=10).stdout.strip()
        return {"torch": version("torch"), "device_name": gpu or study.args.device}
    except (PackageNotFoundError, OSError, subprocess.SubprocessError) as exc:
        return {"device_facts_error": f"{type(exc).__name__}: {exc}"}


def report(study: Study) -> int | None:
    """The same study with --report-only: its markdown and picture for what finished."""
    child = Child(study.base + ["--report-only"], study.cwd, study.log, "report")
    left = max(5.0, study.t0 + study.args.budget - 5 - time.monotonic())
    try:
        rc = child.proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        study.log(f"the report took over {left:.0f} s: stopped")
        child.stop()
        rc = None
    child.reader.join(timeout=2)
    return rc


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "device_study.log")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: STOP.set())
    study = Study(args, out, log)
    study.prepare()
    log(f"{study.record['study']}: seeds {args.seeds}, {args.jobs} jobs on {args.device}, "
        f"budget {args.budget:g} s (stop at {args.budget - MARGIN_S:g} s); work {args.work}; "
        f"{len(study.seen)} runs finished before")
    study.save("training")
    rc = study.record["study_exit"] = train(study)
    study.scan()
    study.pack(trunks=True)
    study.save("reporting")
    # a study that ended wrote its report already; one cut off by a signal is reported at home
    report_rc = 0 if rc == 0 else None if STOP.is_set() else report(study)
    study.record["report_exit"] = report_rc
    for made in sorted(study.report_dir.glob("*.md")) + sorted(study.report_dir.glob("*.png")):
        write_atomic(study.out / made.name, made.read_bytes())
    study.record.update(device_facts(study))
    study.pack(trunks=False)
    state = ("finished" if rc == 0 else "stopped by a signal" if STOP.is_set() else
             "stopped at the deadline" if rc is None else f"study exited with {rc}")
    study.save(state + ("" if report_rc == 0 or STOP.is_set() else "; the report failed"))
    log(f"{state} after {study.elapsed():.0f} s: {len(study.seen)} finished runs in "
        f"{out / 'runs.tar.gz'}; the record in {out / 'device_study.json'}")
    return 130 if STOP.is_set() else 0 if report_rc == 0 and rc in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The cases of reliability round 2 (issue 27) for ``faults_table.py``: links planted in the
workspace, inputs that used to be taken silently, run-folder files that used to crash a command,
a tracking server that never answers, and ``lt-bench ui``.

Each case is (name, command, check): ``check`` is a shell command run after it whose output is
put beside what the command said (whether the file behind a planted link is untouched, what a
config.yaml holds). ``{ws}`` is a fresh workspace, ``{tmp}`` a scratch folder; Python inside a
command doubles its braces.
"""

from __future__ import annotations

#: one epoch; no milestones, so that the shortened schedule's own warning stays out of the way
TINY = ("dataset=synthetic_lt tracking.tracker=local quiet=true protocol.epochs=1 "
        "protocol.milestones=[]")
#: two methods that share a one-epoch trunk (the fork's plain prefix)
FORKED = TINY + " protocol.epochs=2 protocol.start_epoch=1 methods=[ce,effective_number]"

#: ``d``: the tiny run's folder, ``j``: the first job of a sweep of ``ARGS``
RUN = ("from lt_bench.config import load_config; from lt_bench.workspace.layout import run_folder; "
       f"d = run_folder(load_config([], '{TINY} workspace={{ws}}'.split()))")
OUTSIDE = "echo keep > {tmp}/outside && "
UNTOUCHED = "echo outside file: $(cat {tmp}/outside)"


def said(pattern: str) -> str:
    """The check that shows the first line of the command's output matching ``pattern``."""
    return f"grep -m1 -h -E '{pattern}' {{tmp}}/output.txt"



def py(code: str) -> str:
    return f'python -c "import os, json, glob, pathlib; {code}"'


def train(extra: str = "") -> str:
    return f"lt-bench train {TINY} {extra} workspace={{ws}}"


def sweep(args: str) -> str:
    return f"lt-bench sweep {args} workspace={{ws}}"


def link_in_run(name: str) -> tuple[str, str]:
    """A link named ``name`` in the tiny run's folder, pointing outside; then train the run."""
    plant = py(f"{RUN}; d.mkdir(parents=True); os.symlink('{{tmp}}/outside', d / '{name}')")
    return OUTSIDE + plant + " && " + train(), UNTOUCHED


def finished_then(change: str, command: str) -> str:
    """Train the tiny run, change its folder (Python, ``d`` and ``r`` = results.json), run."""
    return (train() + " > /dev/null 2>&1 && "
            + py(f"{RUN}; r = d / 'results.json'; {change}") + " && " + command)


def set_field(assign: str) -> str:
    return f"x = json.loads(r.read_text()); {assign}; r.write_text(json.dumps(x))"


LEADERBOARD = "lt-bench leaderboard tracking.tracker=local workspace={ws}"
SILENT_SERVER = ("python -c \"import socket, subprocess, sys; s = socket.socket(); "
                 "s.bind(('127.0.0.1', 0)); s.listen(64); p = s.getsockname()[1]; "
                 "sys.exit(subprocess.call(['lt-bench', 'train', *'" + TINY.replace(
                     "tracking.tracker=local", "") + " workspace={ws}'.split(), "
                 "'tracking.uri=http://127.0.0.1:%d' % p{more}]))\"")
IMAGES = ("import numpy as np; from PIL import Image; "
          "[(pathlib.Path('{tmp}/img/' + s + '/' + c).mkdir(parents=True, exist_ok=True), "
          "[Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save("
          "'{tmp}/img/' + s + '/' + c + '/%d.png' % i) for i in range(n)]) "
          "for s, c, n in {layout}]")
IMAGE_RUN = ("lt-bench train dataset=image_folder_lt imbalance=null data.root={tmp}/img "
             "tracking.tracker=local quiet=true protocol.epochs=1 protocol.batch_size=4 "
             "workspace={ws}")
UI_SIGTERM = ("python -c \"import signal, socket, subprocess, sys, time; s = socket.socket(); "
              "s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); "
              "ui = subprocess.Popen(['lt-bench', 'ui', '--port', str(p), 'workspace={ws}'], "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
              "up = lambda: socket.socket().connect_ex(('127.0.0.1', p)) == 0; "
              "t = time.time(); [time.sleep(0.5) for _ in iter(lambda: up() or time.time() - t "
              "> 90, True)]; ui.send_signal(signal.SIGTERM); ui.wait(30); time.sleep(3); "
              "print('port still served after SIGTERM' if up() else 'server gone after SIGTERM')"
              "\"")

CASES = [
    # -- writes through a planted link -------------------------------------------------------
    ("R2 link: owner.lock", *link_in_run("owner.lock")),
    ("R2 link: config.yaml", *link_in_run("config.yaml")),
    ("R2 link: results.tmp", *link_in_run("results.tmp")),
    ("R2 link: sweeps/logs/<run>.log",
     OUTSIDE + py("from lt_bench.sweep.grid import expand; "
                  f"j = expand('{TINY} methods=[ce] workspace={{ws}}'.split()).jobs[0]; "
                  "p = pathlib.Path('{ws}/sweeps/logs'); p.mkdir(parents=True); "
                  "os.symlink('{tmp}/outside', p / (j.run_dir.name + '.log'))")
     + " && " + sweep(f"{TINY} methods=[ce]"), UNTOUCHED),
    ("R2 link: trunks/*/trunk.json",
     OUTSIDE + py("from lt_bench.sweep.trunks import plan; from lt_bench.sweep.grid import expand; "
                  f"[t] = plan(expand('{FORKED} workspace={{ws}}'.split()).jobs); "
                  "t.folder.mkdir(parents=True); os.symlink('{tmp}/outside', t.folder / "
                  "'trunk.json')") + " && " + sweep(FORKED),
     UNTOUCHED + " / $(" + said("link") + ")"),
    ("R2 link: sweeps/comparison-*.png",
     OUTSIDE + sweep(f"{TINY} methods=[ce]") + " > /dev/null 2>&1 && "
     + py("[(os.remove(f), os.symlink('{tmp}/outside', f)) for f in "
          "glob.glob('{ws}/sweeps/comparison-*.png')]") + " && " + sweep(f"{TINY} methods=[ce]"),
     UNTOUCHED),
    # -- silently wrong ----------------------------------------------------------------------
    ("R2 sweep methods=[effective_number] method.beta=0.5",
     sweep(f"{TINY} methods=[effective_number] method.beta=0.5"),
     "echo config.yaml: $(grep -h 'beta' {ws}/runs/*/config.yaml)"),
    ("R2 train method.beta=0.5 method=effective_number",
     train("method.beta=0.5 method=effective_number"),
     "echo config.yaml: $(grep -h 'beta' {ws}/runs/*/config.yaml)"),
    ("R2 ImageFolder: a class missing from test/",
     py(IMAGES.replace("{layout}", "[('train', 'a', 6), ('train', 'b', 3), ('test', 'a', 2)]"))
     + " && " + IMAGE_RUN, ""),
    ("R2 ImageFolder: test/ with class folders, no images",
     py(IMAGES.replace("{layout}", "[('train', 'a', 6), ('train', 'b', 3), ('test', 'a', 0), "
                                   "('test', 'b', 0)]")) + " && " + IMAGE_RUN, ""),
    ("R2 plugin raw_weights() negative",
     "printf 'import torch, lt_bench\\nclass Neg(lt_bench.Method):\\n    def raw_weights(self):"
     "\\n        return -torch.arange(1.0, self.num_classes + 1)\\n@lt_bench.hookimpl\\ndef "
     "lt_bench_register_methods(register):\\n    register(\"neg\", Neg)\\n' > {tmp}/neg.py && "
     + train("plugins=[{tmp}/neg.py] method=neg"), ""),
    ("R2 protocol.start_epoch=10 protocol.epochs=2 method=dv",
     train("method=dv protocol.epochs=2 protocol.start_epoch=10"), ""),
    ("R2 protocol.milestones=[5,1]", train("protocol.milestones=[5,1]"), ""),
    ("R2 protocol.milestones=[-1]", train("protocol.milestones=[-1]"), ""),
    ("R2 protocol.milestones=[500]", train("protocol.milestones=[500]"), ""),
    ("R2 sweep seeds=[0,0]", sweep(f"{TINY} methods=[ce] seeds=[0,0]"), said("duplicate")),
    ("R2 sweep methods=[ce,ce]", sweep(f"{TINY} methods=[ce,ce]"), said("duplicate")),
    ("R2 truncated trunk checkpoint, sweep again",
     sweep(FORKED) + " > /dev/null 2>&1 && "
     + py("[pathlib.Path(f).write_bytes(pathlib.Path(f).read_bytes()[:1000]) for f in "
          "glob.glob('{ws}/trunks/*/checkpoint.pt')]; "
          "import shutil; shutil.rmtree('{ws}/runs')") + " && " + sweep(FORKED),
     "echo $(grep -h -m1 'does not match' {ws}/sweeps/logs/*.log) / finished runs: "
     "$(ls {ws}/runs/*/results.json | wc -l)"),
    ("R2 protocol.batch_size=1", train("protocol.batch_size=1"), ""),
    ("R2 config file: workspace: ${oc.env:HOME}/x",
     "echo 'workspace: ${{oc.env:HOME}}/lt-bench-x' > {tmp}/c.yaml && lt-bench train "
     "{tmp}/c.yaml " + TINY, ""),
    # -- run-folder files that used to crash the command that reads them ----------------------
    ("R2 results.json a list: train", finished_then("r.write_text('[]')", train()), ""),
    ("R2 results.json a list: leaderboard", finished_then("r.write_text('[]')", LEADERBOARD),
     ""),
    ("R2 results.json a list: sweep",
     finished_then("r.write_text('[]')", sweep(f"{TINY} methods=[ce]")), ""),
    ("R2 imbalance a string: leaderboard",
     finished_then(set_field("x['imbalance'] = 'lots'"), LEADERBOARD), ""),
    ("R2 per-class strings: leaderboard --plot",
     finished_then(set_field("x['final']['per_class'] = ['a'] * 5"),
                   LEADERBOARD + " --plot {tmp}/p.png"), said("corrupt")),
    ("R2 progress.json a number: sweep",
     finished_then("r.unlink(); (d / 'progress.json').write_text('5')",
                   sweep(f"{TINY} methods=[ce]")), said(r"^\[1/1\]")),
    ("R2 progress.json null fields: sweep",
     finished_then("r.unlink(); (d / 'progress.json').write_text(json.dumps(dict(epoch=None, "
                   "epochs=None, step=None)))", sweep(f"{TINY} methods=[ce]")), said(r"^\[1/1\]")),
    ("R2 owner.lock a directory",
     py(f"{RUN}; (d / 'owner.lock').mkdir(parents=True)") + " && " + train(), ""),
    ("R2 owner.lock a dangling link",
     py(f"{RUN}; d.mkdir(parents=True); os.symlink('{{tmp}}/nowhere', d / 'owner.lock')")
     + " && " + train(), ""),
    ("R2 run folder a file",
     py(f"{RUN}; d.parent.mkdir(parents=True); d.write_text('')") + " && " + train(), ""),
    ("R2 leaderboard --plot out.txt", finished_then("pass", LEADERBOARD + " --plot {tmp}/out.txt"),
     ""),
    ("R2 results.json truncated: leaderboard",
     finished_then("r.write_text(r.read_text()[:50])", LEADERBOARD), ""),
    ("R2 results.json empty: leaderboard", finished_then("r.write_text('')", LEADERBOARD), ""),
    ("R2 file list with absolute paths",
     py(IMAGES.replace("{layout}", "[('train', 'a', 6), ('train', 'b', 3), ('test', 'a', 2), "
                                   "('test', 'b', 2)]")
        + "; [pathlib.Path('{tmp}/' + s + '.txt').write_text(''.join('%s %d\\n' % (p, c) "
          "for c, k in enumerate('ab') for p in sorted(glob.glob('{tmp}/img/' + s + '/' + k "
          "+ '/*.png')))) for s in ('train', 'test')]; os.makedirs('{tmp}/root')")
     + " && lt-bench train dataset=imagenet_lt imbalance=null data.root={tmp}/root "
       "data.train_list={tmp}/train.txt data.test_list={tmp}/test.txt data.num_classes=2 "
       "backbone=resnet32 data.augment=none tracking.tracker=local quiet=true protocol.epochs=1 "
       "protocol.batch_size=4 workspace={ws}", ""),
    # -- a tracking server that accepts and never answers; the UI -----------------------------
    ("R2 server never answers (default timeout_s=30)", SILENT_SERVER.replace("{more}", ""), ""),
    ("R2 server never answers, tracking.timeout_s=5",
     SILENT_SERVER.replace("{more}", ", 'tracking.timeout_s=5'"), ""),
    ("R2 lt-bench ui --host 0.0.0.0 (stopped after 20 s)",
     "timeout -s INT 20 lt-bench ui --host 0.0.0.0 --port 5391 workspace={ws}",
     "echo $(" + said("authentication") + ")"),
    ("R2 SIGTERM to lt-bench ui", UI_SIGTERM, ""),
]

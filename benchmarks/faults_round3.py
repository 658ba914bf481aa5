"""The cases of round 3 (issue 35) for ``faults_table.py``: studies, ``reproduce``, anchors, the
CPU variant cache, configs, paths and plugins, run as a hostile user would.

Each case is (name, command, check), as in ``faults_round2.py``: ``check`` is a shell command
run after the command whose output stands beside what it said (whether a marker file that a
planted plugin would write exists, what the file behind a link holds). ``{ws}`` is a fresh
workspace, ``{tmp}`` a scratch folder; Python inside a command doubles its braces.
"""

from __future__ import annotations

STUDY = "configs/study/zheng_ng_table1_if100.yaml"
REPORT = "lt-bench reproduce {tmp}/s.yaml --report-only tracking.tracker=local workspace={ws}"
#: what a planted plugin would have left
RAN = "echo marker: $(cat {tmp}/ran 2>/dev/null || echo none)"
EVIL = ("echo \"open('{tmp}/ran', 'w').write('code ran')\" > {tmp}/evil_plugin.py && "
        "printf 'plugins: [{tmp}/evil_plugin.py]\\nprotocol: {{epochs: 1}}\\n' > "
        "{tmp}/evilproto.yaml && ")
UP = "../../../../../../../../.."


def study(change: str) -> str:
    """The shipped IF 100 study with ``change`` applied to ``r`` (its YAML as a dict)."""
    return ("python -c \"import yaml; r = yaml.safe_load(open('" + STUDY + "')); " + change
            + "; open('{tmp}/s.yaml', 'w').write(yaml.safe_dump(r, allow_unicode=True))\"")


def config(text: str, command: str = "lt-bench data describe {tmp}/c.yaml") -> str:
    return f"printf '{text}' > {{tmp}}/c.yaml && {command}"


BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9) if a else ', '.join(['x'] * 9)}]\\n"
               for a, b in zip(["", *"abcdefgh"], "abcdefghi"))
PLUGINS = "benchmarks/fault_plugins"
TINY = "dataset=synthetic_lt quiet=true protocol.epochs=1 protocol.milestones=[]"

CASES = [
    # -- the worst ---------------------------------------------------------------------------
    ("R3 study name: ../../evil", study("r['name'] = '../../evil'") + " && " + REPORT,
     "ls {ws}/../../evil.png 2>&1 | tail -1"),
    ("R3 study name: /tmp/x/abs_evil", study("r['name'] = '{tmp}/abs_evil'") + " && " + REPORT,
     "ls {tmp}/abs_evil.png 2>&1 | tail -1"),
    ("R3 study protocol: ../…/evilproto (a plugin in it)",
     EVIL + study(f"r['protocol'] = '{UP}{{tmp}}/evilproto'") + " && " + REPORT, RAN),
    ("R3 typed protocol=../…/evilproto",
     EVIL + f"lt-bench data describe protocol={UP}{{tmp}}/evilproto", RAN),
    ("R3 link at studies/NAME/NAME.png",
     "mkdir -p {ws}/studies/zheng_ng_table1_if100 && echo keep > {tmp}/outside && ln -s "
     "{tmp}/outside {ws}/studies/zheng_ng_table1_if100/zheng_ng_table1_if100.png && "
     "lt-bench reproduce zheng_ng_table1_if100 --report-only tracking.tracker=local "
     "workspace={ws}", "echo outside file: $(cat {tmp}/outside)"),
    ("R3 link at studies/NAME (a folder)",
     "mkdir -p {ws}/studies {tmp}/elsewhere && ln -s {tmp}/elsewhere "
     "{ws}/studies/zheng_ng_table1_if100 && lt-bench reproduce zheng_ng_table1_if100 "
     "--report-only tracking.tracker=local workspace={ws}",
     "echo files there: $(ls {tmp}/elsewhere | wc -l)"),
    ("R3 plugin data set with an empty test split",
     f"lt-bench -p {PLUGINS}/empty_test_split.py train dataset=no_test tracking.tracker=local "
     f"{TINY.replace('dataset=synthetic_lt ', '')} workspace={{ws}}", ""),
    ("R3 YAML bomb (9^9)", config(BOMB), ""),
    ("R3 YAML bomb under method:",
     config("method:\\n" + "".join("  " + line + "\\n" for line in BOMB.split("\\n") if line)),
     ""),
    # -- bad: studies --------------------------------------------------------------------------
    ("R3 study imbalance: abc", study("r['columns'][0]['imbalance'] = 'abc'") + " && " + REPORT,
     ""),
    ("R3 study columns: [5]", study("r['columns'] = [5]") + " && " + REPORT, ""),
    ("R3 study rows: [5, 6]", study("r['rows'] = [5, 6]") + " && " + REPORT, ""),
    ("R3 study options: x", study("r['rows'][0]['options'] = 'x'") + " && " + REPORT, ""),
    ("R3 study setup: [1, 2]", study("r['setup'] = [1, 2]") + " && " + REPORT, ""),
    ("R3 study paper_seeds: x", study("r['paper_seeds'] = 'x'") + " && " + REPORT, ""),
    ("R3 study paper_seeds: 1", study("r['paper_seeds'] = 1") + " && " + REPORT, ""),
    ("R3 study claims: x", study("r['claims'] = 'x'") + " && " + REPORT, ""),
    ("R3 study unknown method", study("r['rows'][0]['method'] = 'cee'") + " && " + REPORT, ""),
    ("R3 study unknown data set",
     study("r['columns'][0]['dataset'] = 'cifar11_lt'") + " && " + REPORT, ""),
    # -- bad: anchors and the variant cache ----------------------------------------------------
    ("R3 anchors: a pickled .pt",
     "python -c \"import pickle; open('{tmp}/a.pt', 'wb').write(pickle.dumps({{'anchors': print}}))\""
     " && lt-bench train " + TINY + " backbone=vl_ltr backbone.anchors={tmp}/a.pt "
     "tracking.tracker=local workspace={ws}", ""),
    ("R3 anchors: class_names: 5",
     "python -c \"import torch; torch.save({{'anchors': torch.ones(5, 1, 8), 'class_names': 5}}, "
     "'{tmp}/a.pt')\" && lt-bench train " + TINY + " backbone=vl_ltr backbone.anchors={tmp}/a.pt "
     "tracking.tracker=local workspace={ws}", ""),
    ("R3 anchors --names a,b for another data set",
     "lt-bench anchors {tmp}/o.pt --model {tmp}/none --names a,b " + TINY, ""),
    ("R3 CPU variant cache: entries of the wrong type",
     "python -c \"import json; from pathlib import Path; from lt_bench.device.cpu_variant import "
     "cached_choice; print([cached_choice(e, Path('c')) for e in ['x', {{'channels_last': "
     "'false', 'compile': False}}, {{'channels_last': True, 'compile': False, 'figures': 5}}]])\"",
     ""),
    # -- bad: configs, paths, plugins ------------------------------------------------------------
    ("R3 config: non-UTF-8 bytes", config("name: \\377\\376\\n"), ""),
    ("R3 config: a 200-deep list", config("x: " + "[" * 200 + "]" * 200 + "\\n"), ""),
    ("R3 config: 118 MB",
     "python -c \"open('{tmp}/c.yaml', 'w').write('a: [' + '1, ' * 40_000_000 + '1]')\" && "
     "lt-bench data describe {tmp}/c.yaml", ""),
    ("R3 config: ${${data.root}}", config("data: {{root: \"${{${{data.profile}}}}\"}}\\n"), ""),
    ("R3 config: ${oc.${data.root}:HOME}",
     config("data: {{root: env, cache_dir: \"${{oc.${{data.root}}:HOME}}\"}}\\n"), ""),
    ("R3 workspace=/tmp/ws #x", "lt-bench train " + TINY + " tracking.tracker=local "
     "'workspace={ws} #x'", ""),
    ("R3 a 3,831-character workspace",
     "lt-bench train " + TINY + " workspace={tmp}/$(python -c \"print('/'.join(['d' * 250] * 15))\")",
     ""),
    ("R3 %20 in the workspace's name",
     "lt-bench train " + TINY + " 'workspace={tmp}/a%20b'", "ls {tmp}/a%20b"),
    ("R3 plugin raw_weights() returns numpy",
     f"lt-bench -p {PLUGINS}/numpy_weights.py train {TINY} method=np_weights "
     "tracking.tracker=local workspace={ws}", ""),
]

"""``lt-bench ui`` end to end: a real headless Chromium opens the link it prints on the runs
table of the model-training view, with the accuracy columns and the data's fingerprint, finds
the sweep's picture one click away and a run's per-class plot; and the tags, data inputs and
links behind that view.

Needs Debian's chromium (/usr/bin/chromium) and Playwright from PyPI (``.ci/install-browser``);
skips otherwise. Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from lt_bench.tracking.ui_view import seen_once_script

HERE = Path(__file__).parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]



def store(tmp_path: Path, template_db: Path) -> Path:
    """A workspace whose MLflow store exists (copied from the migrated template)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    return ws


def test_server_command_uses_the_workspace_store(tmp_path, template_db):
    from lt_bench.commands.ui import server_command

    ws = store(tmp_path, template_db)
    command, uri = server_command({"workspace": str(ws)}, "127.0.0.1", 5123)
    assert uri == f"sqlite:///{ws.resolve()}/mlflow.db"
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert command[command.index("--backend-store-uri") + 1] == uri
    assert command[command.index("--artifacts-destination") + 1] == str(ws.resolve() / "mlartifacts")
    assert command[command.index("--host") + 1] == "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def browser_test(fn):
    return pytest.mark.slow(pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="chromium is not installed (.ci/install-browser)")(fn))


@contextmanager
def ui_page(ws: Path, printed: list[str] | None = None, lines: int = 1, **page_options):
    """A Chromium page and the URL of ``lt-bench ui`` serving ``ws``'s store; the first
    ``lines`` lines it prints go into ``printed``. The browser has closed MLflow's pop-ups once
    (``SEEN_ONCE``): in CI, the Detect-Issues pop-up once took the click meant for the
    Assistant's close button."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(.ci/install-browser)")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lt_bench", "ui", f"workspace={ws}",
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        said = [proc.stdout.readline() for _ in range(lines)]
        (printed if printed is not None else []).extend(line.rstrip("\n") for line in said)
        url = f"http://127.0.0.1:{port}"
        assert url in said[0]
        _wait_http(f"{url}/health", 120)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            context = browser.new_context(**page_options)
            context.add_init_script(seen_once_script())
            yield context.new_page(), url
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            out += [child, *_descendants(child)]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow  # a real mlflow server starts: 20-50 s on a loaded 2-core machine
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_sigterm_stops_the_whole_mlflow_server(tmp_path, template_db):
    """``kill <pid of lt-bench ui>`` leaves no process of the MLflow server (uvicorn, the job
    runner and its consumers) and no answer on the port."""
    ws = store(tmp_path, template_db)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lt_bench", "ui", f"workspace={ws}",
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    server: list[int] = []
    try:
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        _wait_http(f"http://127.0.0.1:{port}/health", 120)
        server = _descendants(proc.pid)
        assert server  # mlflow server and what it started
        proc.send_signal(signal.SIGTERM)  # to lt-bench ui alone, as `kill PID` does
        proc.wait(timeout=40)
        deadline = time.monotonic() + 20
        while any(map(_alive, server)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in server if _alive(pid)] and _refused(port)
    finally:
        for pid in [proc.pid, *server]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_serving_every_interface_names_the_host_and_warns(monkeypatch):
    from lt_bench.commands.ui import access_flags, announcement

    where, warning = announcement("sqlite:///ws/mlflow.db", "0.0.0.0", 5000)
    url = f"http://{socket.gethostname()}:5000"
    assert url in where and "http://127.0.0.1:5000" in where
    assert "no authentication" in warning and "read and delete runs" in warning
    assert len(announcement("sqlite:///x", "127.0.0.1", 5000)) == 1  # this machine only
    assert "http://[::1]:5000" in announcement("sqlite:///x", "::1", 5000)[0]
    where, _ = announcement("sqlite:///x", "192.0.2.7", 5000)
    assert "http://192.0.2.7:5000" in where and "127.0.0.1" not in where
    # MLflow answers a Host header or a page origin beyond localhost only when told to
    monkeypatch.delenv("MLFLOW_SERVER_ALLOWED_HOSTS", raising=False)
    monkeypatch.delenv("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", raising=False)
    flags = access_flags("0.0.0.0", 5000)
    hosts = flags[flags.index("--allowed-hosts") + 1].split(",")
    assert f"{socket.gethostname()}:5000" in hosts and "localhost:*" in hosts
    assert flags[flags.index("--cors-allowed-origins") + 1] == url
    assert access_flags("127.0.0.1", 5000) == []
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "*")  # the user's own setting stays
    assert "--allowed-hosts" not in access_flags("0.0.0.0", 5000)


def open_image(page, name: str) -> None:
    """Click ``name`` in the artifact tree of the open run; the UI must fetch and show it."""
    with page.expect_response(lambda r: name in r.url, timeout=60_000) as response:
        page.get_by_text(name, exact=True).first.click(timeout=60_000)
    assert response.value.ok  # the UI fetched the image; fetch it again to read it
    png = page.request.get(response.value.url)
    assert png.ok and png.body()[:4] == b"\x89PNG"
    page.locator(f"img[src*='{name.split('.')[0]}'], img[src^='blob:']").first.wait_for(
        timeout=30_000)


@browser_test
def test_browser_finds_run_and_per_class_plot(tmp_path):
    sys.path.insert(0, str(HERE))
    from test_tracking import log_run, make_cfg

    ws = tmp_path / "ws"
    _, run_id = log_run(make_cfg(ws, "dv", 0), 0.64)
    from lt_bench.tracking.store import client, tracking_uri

    run = client(tracking_uri({"workspace": str(ws)})).get_run(run_id)
    exp_id = run.info.experiment_id
    with ui_page(ws) as (page, url):
        group_name = "dv"  # the group run (one setting: the method's name); seeds nest in it
        page.goto(f"{url}/#/experiments/{exp_id}/runs", wait_until="domcontentloaded")
        page.get_by_text(group_name, exact=True).first.wait_for(timeout=90_000)
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run_id}/artifacts",
                  wait_until="domcontentloaded")
        page.get_by_text("dv-seed0").first.wait_for(timeout=60_000)
        page.get_by_text("plots", exact=True).first.click(timeout=60_000)
        open_image(page, "per_class_accuracy.png")


# -- the model-training view, its link, the data and the picture ------------------------------
FINGERPRINT = "3f2a9c0d1e2b"  # the data the fake runs below trained on
SETTING = "cifar10_lt-IF100-resnet32"


def log_seeds(ws: Path, method: str, accs: list[float]) -> tuple[str, list[str]]:
    """Finished seed runs of ``method`` as the tracker logs them (results.json in their folders
    too, for the comparison picture); returns (group run id, seed run ids)."""
    sys.path.insert(0, str(HERE))
    from omegaconf import OmegaConf
    from test_tracking import DATA_INFO, fake_results, make_cfg

    from lt_bench.tracking.mlflow_tracker import MlflowTracker

    seeds = []
    for seed, acc in enumerate(accs):
        cfg = make_cfg(ws, method, seed)
        result = fake_results(cfg, acc)
        result.provenance = {"data_fingerprint": FINGERPRINT}
        folder = ws / "runs" / f"cifar10_lt-{method}-{result.cfg_hash}-seed{seed}"
        folder.mkdir(parents=True)
        result.save(folder / "results.json")
        tracker = MlflowTracker(OmegaConf.create(cfg))
        seeds.append(tracker.start(cfg, folder, DATA_INFO))
        tracker.finish(result)
    return tracker.group_id, seeds


def installed_ui() -> str:
    """The JavaScript of the installed MLflow UI."""
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "".join(path.read_text(errors="replace") for path in build.glob("*.js"))


def test_experiments_are_marked_new_and_old_and_a_users_kind_stays(tmp_path, template_db):
    from lt_bench.tracking.store import client, ensure_experiment
    from lt_bench.tracking.ui_view import KIND_TAG, VIEW_TAG, experiment_tags

    shutil.copy(template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client(uri)
    new = c.get_experiment(ensure_experiment(c, "fresh", None, uri))
    assert new.tags[KIND_TAG] == "custom_model_development"
    assert json.loads(new.tags[VIEW_TAG])["state"] == json.loads(
        experiment_tags()[VIEW_TAG])["state"]
    old = c.create_experiment("made-before")  # as lt-bench made them before the view
    theirs = c.create_experiment("theirs", tags={KIND_TAG: "genai_development"})
    assert ensure_experiment(c, "made-before", None, uri) == old
    assert c.get_experiment(old).tags[KIND_TAG] == "custom_model_development"
    assert VIEW_TAG in c.get_experiment(old).tags
    ensure_experiment(c, "theirs", None, uri)
    assert c.get_experiment(theirs).tags[KIND_TAG] == "genai_development"


def test_runs_and_groups_name_their_data_by_fingerprint(tmp_path, template_db):
    from lt_bench.tracking.store import client, tracking_uri

    ws = store(tmp_path, template_db)
    group, seeds = log_seeds(ws, "dv", [0.64, 0.66])
    c = client(tracking_uri({"workspace": str(ws)}))
    for run_id in [group, *seeds]:
        [data] = c.get_run(run_id).inputs.dataset_inputs
        assert (data.dataset.name, data.dataset.digest) == (SETTING, FINGERPRINT)
        profile = json.loads(data.dataset.profile)
        assert profile["train_counts"] == [500, 300, 180, 110, 65, 40, 24, 14, 8, 5]
        assert profile["total"] == 1246 and profile["test_counts"] == [100] * 10
        assert json.loads(data.dataset.source) == {"uri": "/data"}
        assert [(t.key, t.value) for t in data.tags] == [("mlflow.data.context", "train")]


def test_a_sweep_ends_with_a_link_per_setting_after_its_leaderboard(tmp_path, template_db,
                                                                    monkeypatch):
    sys.path.insert(0, str(HERE))
    from omegaconf import OmegaConf

    from lt_bench.commands.sweep import run_sweep
    from lt_bench.sweep.grid import expand
    from lt_bench.tracking.mlflow_artifacts import sweep_links
    from lt_bench.tracking.store import client, tracking_uri

    ws = store(tmp_path, template_db)
    monkeypatch.setenv("PYTHONPATH", str(HERE))  # the workers import test_sweep's fake_train
    args = [f"workspace={ws}", "tracking.tracker=mlflow", "dataset=cifar10_lt",
            "imbalance=[100,200]", "methods=[ce]", "seeds=1"]
    lines: list[str] = []
    run_sweep(args, out=lines.append, train_fn="test_sweep:fake_train")
    said = "\n".join(lines).splitlines()
    ids = {e.name: e.experiment_id for e in client(tracking_uri({"workspace": str(ws)}))
           .search_experiments()}
    assert said[-3:] == [
        f"sweep: the runs in the MLflow UI (after `lt-bench ui workspace={ws.resolve()}`), one "
        "link per setting:", *(
            f"sweep:   cifar10_lt-IF{imb}-resnet32: http://127.0.0.1:5000/#/experiments/"
            f"{ids[f'cifar10_lt-IF{imb}-resnet32']}/runs?workflowType=machine_learning&"
            "viewStateShareKey=lt-bench-v2" for imb in (100, 200))]
    assert any(line.startswith("method ") for line in said[:-3])  # the leaderboard came first
    local = [OmegaConf.merge(job.cfg, {"tracking": {"tracker": "local"}})
             for job in expand(args).jobs]
    assert sweep_links(local) == []  # run folders only: no UI to link

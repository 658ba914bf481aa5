"""``lt-bench ui``: the MLflow UI on the workspace's tracking store."""

from __future__ import annotations

from lt_bench.errors import LtBenchError

EVERY_INTERFACE = ("0.0.0.0", "::", "")


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "ui", help="open the MLflow UI on the workspace's runs",
        description="Serve the MLflow UI (mlflow server) on the tracking store of the workspace "
                    "(workspace=DIR, default ./workspace: sqlite:///DIR/mlflow.db with artifacts "
                    "in DIR/mlartifacts) or of tracking.uri=URI, and print its URL and a link "
                    "to each setting's runs table. Stop it with Ctrl-C.",
        epilog="example: lt-bench ui workspace=./workspace --port 5000",
    )
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml|KEY=VALUE")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.set_defaults(func=run)


def server_command(cfg, host: str, port: int) -> tuple[list[str], str]:
    """The ``mlflow server`` command line for ``cfg``'s store, and the store's URI."""
    import sys

    # here, not at the top: it imports omegaconf
    from lt_bench.tracking.store import (
        ARTIFACTS_DIR,
        client,
        is_remote,
        timeout_of,
        tracking_uri,
        workspace,
    )

    uri = tracking_uri(cfg)
    if is_remote(uri):
        raise LtBenchError(f"tracking.uri={uri} is already a tracking server: open it in a "
                           "browser instead of starting `lt-bench ui`")
    # a migrated store, so that the UI starts on it, but no experiment: an empty one of the
    # default setting would be listed above the user's real ones
    client(uri, timeout_of(cfg))
    artifacts = workspace(cfg) / ARTIFACTS_DIR
    artifacts.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--artifacts-destination", str(artifacts), "--host", host,
            "--port", str(port), "--workers", "1", *access_flags(host, port)], uri


def public_name(host: str) -> str | None:
    """The name by which other machines reach ``host``: this machine's for every interface;
    None for a loopback address, which only this machine reaches."""
    import ipaddress
    import socket

    if host in EVERY_INTERFACE:
        return socket.gethostname()
    try:
        return None if ipaddress.ip_address(host).is_loopback else host
    except ValueError:  # a host name
        return None if host == "localhost" else host


def origin(name: str, port: int) -> str:
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def access_flags(host: str, port: int) -> list[str]:
    """MLflow's server answers only requests addressed to localhost or a private IP, and refuses
    the UI's writes from a page on any origin but localhost: the address ``lt-bench ui`` prints
    is allowed too, unless the user's own MLFLOW_SERVER_ALLOWED_HOSTS / _CORS_ALLOWED_ORIGINS
    say otherwise."""
    import os

    name = public_name(host)
    if name is None:
        return []
    from mlflow.server.security_utils import get_default_allowed_hosts

    netloc = origin(name, port).removeprefix("http://")
    flags = []
    if not os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS"):
        flags += ["--allowed-hosts", ",".join([*get_default_allowed_hosts(), netloc])]
    if not os.environ.get("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"):
        flags += ["--cors-allowed-origins", origin(name, port)]
    return flags


def run(args) -> int:
    import socket

    # here, not at the top: it imports omegaconf
    from lt_bench.config import load_config, split_args

    if not 1 <= args.port <= 65535:
        raise LtBenchError(f"--port {args.port} is not a port: give 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:  # mlflow server would say it only in its own log, and the UI would never come
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise LtBenchError(f"cannot serve on {args.host}:{args.port} ({exc.strerror}); "
                               "choose another --port") from None
    paths, overrides = split_args(args.args)
    cfg = load_config(paths, overrides)
    command, uri = server_command(cfg, args.host, args.port)
    for line in announcement(uri, args.host, args.port) + links(uri, args.host, args.port):
        print(line, flush=True)
    return serve(command)


def links(uri: str, host: str, port: int) -> list[str]:
    """One line per setting: the address of its runs table in MLflow's model-training view
    (MLflow 3 opens an experiment on its GenAI pages otherwise)."""
    # here, not at the top: it imports omegaconf
    from lt_bench.tracking.mlflow_artifacts import ui_links

    found = ui_links(uri, origin(public_name(host) or host, port))
    return ["lt-bench: the runs of each setting (open one):"] * bool(found) + [
        f"lt-bench:   {name}: {link}" for name, link in found]


def announcement(uri: str, host: str, port: int) -> list[str]:
    """Where the UI is, at an address that reaches it from where it is served, and a warning
    when that is beyond this machine."""
    name = public_name(host)
    if name is None:
        return [f"lt-bench: MLflow UI for {uri} at {origin(host, port)}  (Ctrl-C stops it)"]
    here = f" (here: http://127.0.0.1:{port})" if host in EVERY_INTERFACE else ""
    return [f"lt-bench: MLflow UI for {uri} at {origin(name, port)}{here}  (Ctrl-C stops it)",
            f"lt-bench: warning: the MLflow UI has no authentication: anyone who can reach port "
            f"{port} of this machine can read and delete runs (serve on 127.0.0.1 and tunnel, "
            f"e.g. ssh -L {port}:127.0.0.1:{port}, to keep it private)"]


def serve(command: list[str]) -> int:
    """Run ``mlflow server`` until it exits, Ctrl-C or SIGTERM; then stop all of it. It starts
    about ten processes (uvicorn, the job runner and its consumers): they run in a process group
    of their own, which is stopped as one, and the server gets SIGTERM from the kernel should
    this process die without a word (``kill -9``)."""
    import os
    import signal
    import subprocess

    # here, not at the top: it imports omegaconf and torch
    from lt_bench.sweep.workers import die_with

    def interrupt(signum, frame):
        raise KeyboardInterrupt  # SIGTERM ends the UI as Ctrl-C does

    proc = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with(os.getpid()))
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one would cut the stopping short
        stop_group(proc)
        signal.signal(signal.SIGTERM, previous)


def stop_group(proc, grace_s: float = 15.0) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL to what is left of it after ``grace_s``;
    returns once the group is gone."""
    import os
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace_s
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the group's id is the leader's pid
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader, else its zombie keeps the group alive
                os.killpg(proc.pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            return

"""``lt-bench ui``: the MLflow UI on the workspace's tracking store."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "ui", help="open the MLflow UI on the workspace's runs",
        description="Serve the MLflow UI (mlflow server) on the tracking store of the workspace "
                    "(workspace=DIR, default ./workspace: sqlite:///DIR/mlflow.db with artifacts "
                    "in DIR/mlartifacts) or of tracking.uri=URI, and print its URL. Stop it with "
                    "Ctrl-C.",
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

    from lt_bench.errors import LtBenchError
    from lt_bench.tracking.store import (
        ARTIFACTS_DIR,
        is_remote,
        prepare_store,
        tracking_uri,
        workspace,
    )

    uri = tracking_uri(cfg)
    if is_remote(uri):
        raise LtBenchError(f"tracking.uri={uri} is already a tracking server: open it in a "
                           "browser instead of starting `lt-bench ui`")
    prepare_store(cfg)  # an empty store, so that the UI starts on a migrated database
    artifacts = workspace(cfg) / ARTIFACTS_DIR
    artifacts.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--artifacts-destination", str(artifacts), "--host", host,
            "--port", str(port), "--workers", "1"], uri


def run(args) -> int:
    import socket
    import subprocess

    from lt_bench.config import load_config, split_args
    from lt_bench.errors import LtBenchError

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
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"lt-bench: MLflow UI for {uri} at http://{shown}:{args.port}  (Ctrl-C stops it)",
          flush=True)
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return 0

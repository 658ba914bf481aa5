"""Bad input and faults end in one line that names the key or the file, before any data where
the config alone shows the problem (issue 17's cases)."""

import time

import pytest
import torch

import lt_bench.run.train as harness
from lt_bench import LtBenchError, build_method
from lt_bench.config import load_config
from lt_bench.workspace.layout import run_folder

TINY = ["dataset=synthetic_lt", "imbalance=10", "protocol.epochs=1", "precision=fp32",
        "quiet=true", "tracking.tracker=local"]


@pytest.mark.parametrize("override,key", [
    ("protocol.lr=-1", "protocol.lr"), ("protocol.lr=0", "protocol.lr"),
    ("protocol.weight_decay=-1", "protocol.weight_decay"),
    ("protocol.lr_decay=-1", "protocol.lr_decay"), ("protocol.lr_decay=2", "protocol.lr_decay"),
    ("protocol.momentum=1.5", "protocol.momentum"), ("data.num_classes=0", "data.num_classes"),
    ("protocol.eval_every=0", "protocol.eval_every"), ("log_every=0", "log_every"),
])
def test_out_of_range_values_are_rejected_with_the_key(override, key):
    with pytest.raises(LtBenchError, match=key.replace(".", r"\.")):
        load_config([], [override])


def test_a_diverging_run_stops_in_one_line_naming_the_lr(tmp_path):
    cfg = load_config([], TINY + ["protocol.lr=1e6", "protocol.warmup_epochs=0",
                                  f"workspace={tmp_path}"])
    with pytest.raises(LtBenchError, match="diverged.*protocol.lr"):
        harness.train(cfg)


def test_an_empty_batch_is_a_clear_error():
    criterion = build_method("ce", [5, 3, 1])
    with pytest.raises(LtBenchError, match="empty"):
        criterion(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    cfg = load_config([], TINY + [f"workspace={tmp_path}"])
    folder = run_folder(cfg)
    folder.mkdir(parents=True)
    stale = folder / ".checkpoint.pt.12345.tmp"
    stale.write_bytes(b"half a checkpoint")
    harness.train(cfg)
    assert not stale.exists()


def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full(obj, f, *a, **k):
        f.write(b"partial")  # the checkpoint's temporary, opened by lt_bench's safe writer
        raise RuntimeError("[enforce fail at inline_container.cc] No space left on device")

    monkeypatch.setattr("lt_bench.run.checkpoint.torch.save", full)
    cfg = load_config([], TINY + [f"workspace={tmp_path}"])
    with pytest.raises(LtBenchError, match="cannot write the checkpoint in .*MiB free"):
        harness.train(cfg)
    assert not list(tmp_path.glob("runs/*/.checkpoint.pt.*.tmp"))


def test_a_checkpoint_of_another_structure_says_how_to_start_again(tmp_path):
    cfg = load_config([], TINY + [f"workspace={tmp_path}"])
    folder = run_folder(cfg)
    folder.mkdir(parents=True)
    torch.save({"something": 1}, folder / "checkpoint.pt")
    with pytest.raises(LtBenchError, match="not one of this run's.*resume=false"):
        harness.train(cfg)


def test_an_unreachable_tracking_server_fails_fast_in_one_line(tmp_path):
    cfg = load_config([], [a for a in TINY if not a.startswith("tracking")]
                      + ["tracking.uri=http://127.0.0.1:1", f"workspace={tmp_path}"])
    started = time.monotonic()
    with pytest.raises(LtBenchError) as info:
        harness.train(cfg)
    assert time.monotonic() - started < 30
    assert "http://127.0.0.1:1" in str(info.value) and "\n" not in str(info.value)


def test_float_targets_are_a_clear_error():
    criterion = build_method("ce", [5, 3, 1])
    with pytest.raises(LtBenchError, match=r"targets.long\(\)"):
        criterion(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_a_state_of_another_class_count_is_a_clear_error():
    state = build_method("dv", [5, 3, 1]).state_dict()
    with pytest.raises(LtBenchError, match="3 classes, not 4"):
        build_method("dv", [5, 3, 2, 1]).load_state_dict(state)


def test_an_unwritable_workspace_fails_before_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "load_data",
                        lambda *a, **k: pytest.fail("data loaded before the workspace check"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = load_config([], TINY + [f"workspace={blocker}"])
    with pytest.raises(LtBenchError, match="config key 'workspace'"):
        harness.train(cfg)


@pytest.mark.parametrize("port,match", [(99999, "not a port"), (None, "choose another --port")])
def test_ui_on_a_bad_or_taken_port_is_one_line_and_exit_2(port, match, capsys):
    import socket

    from lt_bench.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        chosen = port or taken.getsockname()[1]
        assert main(["ui", "--port", str(chosen)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err


def test_a_method_option_out_of_range_fails_before_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "load_data",
                        lambda *a, **k: pytest.fail("data loaded before the option check"))
    cfg = load_config([], ["dataset=cifar10_lt", "data.root=/nonexistent", "method=effective_number",
                           "method.beta=1.5", "tracking.tracker=local", f"workspace={tmp_path}"])
    with pytest.raises(LtBenchError, match="beta must be in"):
        harness.train(cfg)


class _Payload:
    """Unpickling this runs code: what a planted checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates the marker file when unpickled


def test_a_planted_pickle_checkpoint_does_not_run(tmp_path):
    """Case 1: a pickle planted as a run's checkpoint.pt is refused in one line, unexecuted."""
    import pickle

    cfg = load_config([], TINY + [f"workspace={tmp_path}"])
    folder = run_folder(cfg)
    folder.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    (folder / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Payload(str(marker))}))
    with pytest.raises(LtBenchError, match=r"checkpoint .* cannot be read.*resume=false") as info:
        harness.train(cfg)
    assert not marker.exists() and "\n" not in str(info.value)


@pytest.mark.parametrize("method,option", [("focal", "gamma"), ("ldam", "scale"),
                                           ("logit_adjusted", "tau"), ("effective_number", "beta")])
def test_a_non_finite_option_is_refused(method, option):
    """Case 7: NaN or inf as an option value gives one line, never a NaN loss."""
    for value in (float("nan"), float("inf")):
        with pytest.raises(LtBenchError, match=option):
            build_method(method, [10, 1], **{option: value})


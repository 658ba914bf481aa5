"""Config loading: schema defaults, groups, YAML files, overrides and the errors naming the key."""

import pytest

from lt_bench import LtBenchError
from lt_bench.config import config_hash, load_config


def test_groups_and_overrides_apply_in_order(tmp_path):
    cfg = load_config([], ["protocol=paper_cifar", "protocol.epochs=3", "method=dv",
                           "method.components=4", "imbalance=200", "data.root=/x"])
    assert cfg.protocol.name == "paper_cifar" and cfg.protocol.epochs == 3
    assert cfg.protocol.batch_size == 100 and list(cfg.protocol.milestones) == [159, 179]
    assert cfg.protocol.start_epoch == 160
    assert dict(cfg.method) == {"name": "dv", "components": 4}
    assert cfg.imbalance == 200 and cfg.data.root == "/x"


def test_selecting_another_method_drops_the_previous_options():
    cfg = load_config([], ["method=effective_number", "method.beta=0.99", "method=dv"])
    assert dict(cfg.method) == {"name": "dv"}


def test_yaml_file_with_group_names(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: focal\nprotocol: ldam_cifar\nseed: 7\n")
    cfg = load_config([str(path)], ["protocol.epochs=2"])
    assert cfg.method.name == "focal" and cfg.protocol.warmup_epochs == 5
    assert cfg.seed == 7 and cfg.protocol.epochs == 2


@pytest.mark.parametrize("override,match", [
    ("protocl.epochs=1", "unknown config key 'protocl'.*did you mean 'protocol'"),
    ("protocol.epoch=1", "unknown config key 'protocol.epoch'.*did you mean 'epochs'"),
    ("protocol.epochs=abc", "protocol.epochs"),
    ("data.rot=/x", "did you mean 'root'"),
    ("precision=fp16", "precision"),
    ("imbalance=0.5", "imbalance"),
    ("protocol=nope", "unknown protocol 'nope'"),
    ("notakeyvalue", "neither a YAML file nor key=value"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(LtBenchError, match=match):
        if "=" in override:
            load_config([], [override])
        else:
            from lt_bench.config import split_args
            split_args([override])


def test_missing_yaml_file():
    with pytest.raises(LtBenchError, match="not found"):
        load_config(["/no/such.yaml"], [])


def test_hash_ignores_seed_and_bookkeeping_but_not_the_method():
    a = load_config([], ["seed=1", "workspace=/a"])
    b = load_config([], ["seed=2", "workspace=/b", "quiet=true", "data.download=false",
                         "data.cache_dir=/c", "compile_mode=max-autotune"])
    c = load_config([], ["method=dv"])
    d = load_config([], ["data.subset_seed=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert config_hash(d) != config_hash(a)  # which images: part of the identity


def test_a_method_option_typed_at_its_default_is_the_same_setting():
    """``dv``'s signature says convention='paper' and ``pv``'s components=10: typing them must not
    make a new setting (a sweep would retrain finished runs, the leaderboard split a row)."""
    assert config_hash(load_config([], ["method=dv", "method.convention=paper"])) == \
        config_hash(load_config([], ["method=dv"]))
    assert config_hash(load_config([], ["method=dv", "method.convention=authors"])) != \
        config_hash(load_config([], ["method=dv"]))
    pv = load_config([], ["method=pv", "method.components=10", "method.loss=ce"])
    assert dict(pv.method) == {"name": "pv"}
    assert load_config([], ["method=pv", "method.components=9"]).method.components == 9
    # the loss's options too: focal's gamma defaults to 2 (Lin et al.), also under another method
    assert dict(load_config([], ["method=focal", "method.gamma=2.0"]).method) == {"name": "focal"}
    assert dict(load_config([], ["method=ce", "method.loss=focal", "method.gamma=2"]).method) \
        == {"name": "ce", "loss": "focal"}
    assert load_config([], ["method=focal", "method.gamma=1.0"]).method.gamma == 1.0
    assert load_config([], ["method=dv", "method.loss=nosuch"]).method.loss == "nosuch"


def test_a_value_for_a_whole_section_is_a_clear_error():
    with pytest.raises(LtBenchError, match=r"override 'data=5'.*DataConfig"):
        load_config([], ["data=5"])


def test_hashing_a_dict_leaves_it_as_it_was():
    from lt_bench.config import to_dict

    d = to_dict(load_config([], ["data.download=false"]))
    config_hash(d)
    assert "download" in d["data"] and "seed" in d  # nothing popped from the caller's dict


def test_the_reweighting_start_is_one_key_protocol_start_epoch():
    from lt_bench.run.assemble import method_options_of

    cfg = load_config([], ["method=dv", "protocol=quick", "protocol.start_epoch=2"])
    assert method_options_of(cfg)["start_epoch"] == 2
    with pytest.raises(LtBenchError, match=r"'method.start_epoch'.*protocol.start_epoch"):
        load_config([], ["method=dv", "method.start_epoch=3"])
    with pytest.raises(LtBenchError, match="protocol.start_epoch' must be >= 0"):
        load_config([], ["protocol.start_epoch=-1"])
    # unset: the method's own default
    assert "start_epoch" not in method_options_of(load_config([], ["method=dv"]))


def test_a_yaml_file_wins_over_a_group_chosen_after_it(tmp_path):
    """Groups compose first; a file's keys are typed, so they win whatever the order."""
    path = tmp_path / "mine.yaml"
    path.write_text("protocol:\n  epochs: 3\n  lr: 0.05\nmethod:\n  name: dv\n"
                    "  components: 4\n")
    cfg = load_config([str(path)], ["protocol=quick"])  # quick says 7 epochs, lr 0.1
    assert cfg.protocol.epochs == 3 and cfg.protocol.lr == 0.05
    assert cfg.protocol.name == "quick" and cfg.protocol.start_epoch == 5  # the rest is quick's
    assert cfg.method.components == 4
    # choosing another method drops the options typed for the previous one
    cfg = load_config([str(path)], ["method=ce"])
    assert cfg.method.name == "ce" and "components" not in cfg.method


@pytest.mark.parametrize("overrides, recorded", [
    ([], "cf5028f262"),
    (["protocol=ldam_cifar", "method=dv", "dataset=cifar10_lt", "imbalance=100"], "8cbcc93be1"),
    (["protocol=quick", "method=ce", "data.root=../shared/data"], "c403bb84e1"),
])
def test_legacy_hash_of_recorded_runs_does_not_move(overrides, recorded):
    """Hashes recorded before data.pad_mode, data.normalize and data.copy existed: the legacy
    rule (data.root in, no copy) that ``lt-bench workspace upgrade`` reads old folders by still
    gives them, and a new key moved from its default changes it."""
    assert config_hash(load_config([], overrides), legacy=True) == recorded
    moved = load_config([], [*overrides, "data.pad_mode=reflect"])
    assert config_hash(moved, legacy=True) != recorded


def test_a_cifar_hash_names_the_copy_not_the_folder(tmp_path):
    """Moving CIFAR to another folder keeps a run's hash (nothing retrains); another copy of it
    (JPEG instead of lossless pixels) changes the hash, so the two never share a folder."""
    for where in ("a", "b"):
        (tmp_path / where / "cifar-10-batches-py").mkdir(parents=True)
        (tmp_path / where / "cifar10-jpeg.tar.gz").write_bytes(b"")
    a = load_config([], [f"data.root={tmp_path / 'a'}"])
    b = load_config([], [f"data.root={tmp_path / 'b'}"])
    assert a.data["copy"] == b.data["copy"] == "pickle"  # auto: lossless first
    assert config_hash(a) == config_hash(b)
    jpeg = load_config([], [f"data.root={tmp_path / 'a'}", "data.copy=jpeg"])
    assert config_hash(jpeg) != config_hash(a)
    # outside CIFAR the folder is the data set's only name: it stays in the hash
    one = load_config([], ["dataset=image_folder_lt", f"data.root={tmp_path / 'a'}"])
    two = load_config([], ["dataset=image_folder_lt", f"data.root={tmp_path / 'b'}"])
    assert config_hash(one) != config_hash(two)
    with pytest.raises(LtBenchError, match="data.copy=webp applies to the CIFAR data sets"):
        load_config([], ["dataset=image_folder_lt", "data.copy=webp"])
    with pytest.raises(LtBenchError, match="data.copy='png' is not valid"):
        load_config([], ["data.copy=png"])

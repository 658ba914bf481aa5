"""Language anchors of the VL-LTR head: sentences, encoding, the anchors file, `lt-bench anchors`,
and the ResNet-32 tower that puts the head beside ResNet-32's linear head."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from lt_bench.backbones.resnet_cifar import resnet32
from lt_bench.backbones.vl_ltr import load_anchors, save_anchors, vl_ltr
from lt_bench.backbones.vl_ltr_text import (
    encode_anchors,
    read_sentences,
    sentences_from_names,
)
from lt_bench.cli import main
from lt_bench.errors import LtBenchError

#: torchvision's CIFAR10.classes, written out: the label order the shipped sentences must follow
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def letter_encoder(sentences):
    """A made-up encoder: sentence → its letter counts a..h, unit length (easy to check)."""
    rows = torch.tensor([[s.count(ch) for ch in "abcdefgh"] for s in sentences], dtype=torch.float)
    return torch.nn.functional.normalize(rows + 1e-3, dim=-1)


# -- sentences ------------------------------------------------------------------------------------
def test_shipped_cifar10_sentences_follow_the_label_order_with_eight_each():
    names, sentences = read_sentences("cifar10")
    assert names == CIFAR10
    assert [len(s) for s in sentences] == [8] * 10
    for name, texts in zip(names, sentences):
        assert texts[0] == f"a photo of an {name}." if name[0] in "aeiou" else \
            texts[0] == f"a photo of a {name}."
    assert len({t for texts in sentences for t in texts}) == 80  # no sentence repeated


def test_sentences_file_keeps_order_and_takes_a_single_string(tmp_path):
    file = tmp_path / "s.yaml"
    file.write_text("zebra:\n  - striped horse\n  - 'an animal'\napple: a red fruit\n")
    assert read_sentences(file) == (["zebra", "apple"], [["striped horse", "an animal"],
                                                         ["a red fruit"]])


@pytest.mark.parametrize("text, match", [
    ("- a\n- b\n", "must be a YAML mapping"),
    ("cat: []\n", "class 'cat' needs a non-empty list"),
    ("cat: [1, 2]\n", "class 'cat' needs a non-empty list"),
    ("cat: [a\n", "not valid YAML"),
])
def test_bad_sentences_files_fail_in_one_line(tmp_path, text, match):
    file = tmp_path / "s.yaml"
    file.write_text(text)
    with pytest.raises(LtBenchError, match=match) as info:
        read_sentences(file)
    assert "\n" not in str(info.value)


def test_missing_sentences_file_names_the_shipped_ones():
    with pytest.raises(LtBenchError, match="cifar10"):
        read_sentences("nowhere.yaml")


def test_names_into_templates():
    assert sentences_from_names(["sea_lion", "cat"], ("a {}.", "the {} sleeps")) == [
        ["a sea lion.", "the sea lion sleeps"], ["a cat.", "the cat sleeps"]]
    with pytest.raises(LtBenchError, match="no {}"):
        sentences_from_names(["cat"], ("a photo",))


# -- encoding and the file ------------------------------------------------------------------------
def test_encode_anchors_pads_each_class_to_the_longest():
    sentences = [["ab", "abc", "h"], ["g"]]
    anchors, counts = encode_anchors(sentences, letter_encoder)
    assert counts.tolist() == [3, 1]
    assert anchors.shape == (2, 3, 8)
    assert torch.equal(anchors[0], letter_encoder(["ab", "abc", "h"]))
    assert torch.equal(anchors[1, 0], letter_encoder(["g"])[0])
    assert (anchors[1, 1:] == 0).all()


def test_saved_anchors_load_back_and_refuse_other_classes(tmp_path):
    anchors, counts = encode_anchors([["ab"], ["cd", "ef"]], letter_encoder)
    file = save_anchors(tmp_path / "a.pt", anchors, counts, ["cat", "dog"], encoder="letters")
    got, got_counts = load_anchors(file, 2, 8, class_names=["cat", "dog"])
    assert torch.equal(got, anchors) and got_counts.tolist() == [1, 2]
    with pytest.raises(LtBenchError, match="class 0 is 'cat' in the file and 'dog'"):
        load_anchors(file, 2, 8, class_names=["dog", "cat"])
    with pytest.raises(LtBenchError, match="names 2 classes, the data set has 3"):
        load_anchors(file, None, 8, class_names=["cat", "dog", "cow"])
    assert load_anchors(file, 2, 8)[1].tolist() == [1, 2]  # no names to check against


# -- the command ----------------------------------------------------------------------------------
@pytest.fixture
def letters(monkeypatch):
    import lt_bench.backbones.vl_ltr_text as text

    monkeypatch.setattr(text, "sentence_transformers_encoder", lambda folder: letter_encoder)


def test_anchors_command_writes_a_file_the_head_uses(tmp_path, letters, capsys):
    out = tmp_path / "anchors.pt"
    assert main(["anchors", str(out), "--model", "m", "--names", "cab,bad,feh",
                 "--template", "{}", "--template", "a {}"]) == 0
    printed = capsys.readouterr().out
    assert "3 classes, 2–2 sentences each, dimension 8" in printed
    assert "cab→bad" in printed  # cab and bad share a and b; feh shares nothing
    data = torch.load(out, weights_only=True)
    assert data["class_names"] == ["cab", "bad", "feh"]
    assert data["sentences"][2] == ["feh", "a feh"]
    model = vl_ltr(3, class_names=["cab", "bad", "feh"], tower="resnet32", anchors=str(out))
    assert model.head.anchors.shape == (3, 2, 8)
    assert torch.equal(model.head.anchors[1], letter_encoder(["bad", "a bad"]))


@pytest.mark.parametrize("argv, match", [
    (["--model", "m"], "no classes"),
    (["--model", "m", "--names", "a", "--sentences", "cifar10"], "not both"),
    (["--model", "m", "--sentences", "cifar10", "--template", "{}"], "--template applies"),
    (["--model", "m", "--names", "a", "--weights", "w.pt"], "--weights belongs to --clip"),
    (["--clip", "RN50", "--names", "a"], "--clip needs --weights"),
])
def test_anchors_command_errors_are_one_line(tmp_path, letters, capsys, argv, match):
    assert main(["anchors", str(tmp_path / "a.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_clip_text_tower_encodes_every_sentence_unit_length(monkeypatch):
    import lt_bench.backbones.vl_ltr_text as text
    from lt_bench.backbones.vl_ltr_text import clip_encoder

    class FakeClip(torch.nn.Module):
        def encode_text(self, tokens):
            return tokens * 3.0  # made-up: the "embedding" is the scaled token row

    def tokenizer(texts):
        return torch.tensor([[len(t), t.count("a"), 1.0] for t in texts])

    monkeypatch.setattr(text, "build_clip", lambda tower, weights, size: (FakeClip(), tokenizer))
    out = clip_encoder("RN50", "w.pt")(["a cat", "a dog in a car"] * 200)  # > one chunk
    expected = torch.nn.functional.normalize(torch.tensor([[5.0, 2, 1], [14, 3, 1]]), dim=-1)
    assert out.shape == (400, 3)
    assert torch.allclose(out[:2], expected) and torch.allclose(out[398:], expected)


def test_a_folder_that_is_no_sentence_transformers_model_is_named(tmp_path, capsys):
    assert main(["anchors", str(tmp_path / "a.pt"), "--model", str(tmp_path),
                 "--names", "a"]) == 2
    assert "not a sentence-transformers model folder (no modules.json)" in capsys.readouterr().err


# -- the ResNet-32 tower --------------------------------------------------------------------------
def test_resnet32_tower_is_resnet32s_features_then_a_projection():
    torch.manual_seed(0)
    model = vl_ltr(4, tower="resnet32", embed_dim=16, anchors="random").eval()
    plain = resnet32(4).eval()
    state = {k: v for k, v in model.tower.net.state_dict().items()}
    plain.load_state_dict({**state, "fc.weight": plain.fc.weight, "fc.bias": plain.fc.bias})
    x = torch.randn(3, 3, 32, 32)
    expected = model.tower.proj(plain.features(x))
    assert torch.allclose(model.tower(x), expected, atol=1e-6)
    z1, z2 = model.train()(x)
    assert z1.shape == z2.shape == (3, 4)


def test_resnet32_tower_without_anchors_warns_and_takes_no_weights(caplog):
    with caplog.at_level(logging.WARNING, logger="lt_bench"):
        model = vl_ltr(3, tower="resnet32")
    assert any("carry no language" in r.getMessage() for r in caplog.records)
    assert model.head.anchors.shape[2] == 64
    with pytest.raises(LtBenchError, match="tower=resnet32 has no weights"):
        vl_ltr(3, tower="resnet32", weights="w.pt", anchors="random")


# -- a real text model, where one is at hand ------------------------------------------------------
MODEL = os.environ.get("LT_BENCH_TEXT_MODEL", "")


@pytest.mark.skipif(not (MODEL and Path(MODEL, "modules.json").is_file()),
                    reason="set LT_BENCH_TEXT_MODEL to a local sentence-transformers folder")
def test_real_sentence_model_puts_cat_nearer_dog_than_truck():
    pytest.importorskip("sentence_transformers")
    from lt_bench.backbones.vl_ltr_text import sentence_transformers_encoder

    names, sentences = read_sentences("cifar10")
    anchors, counts = encode_anchors(sentences, sentence_transformers_encoder(MODEL))
    means = torch.nn.functional.normalize(anchors.mean(1), dim=-1)
    sim = means @ means.t()
    cat, dog, truck, car = (names.index(n) for n in ("cat", "dog", "truck", "automobile"))
    assert sim[cat, dog] > sim[cat, truck] and sim[truck, car] > sim[truck, cat]

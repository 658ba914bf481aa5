"""Class text anchors from language: sentences per class, encoded by a local text model.

VL-LTR anchors each class with many sentences about it (for ImageNet-LT, Wikipedia passages and
prompts), encoded by CLIP's text tower. Here the sentences come from a YAML file (class name →
sentences, in label order) or from class names put into prompt templates, and the encoder is
either a sentence-transformers model in a local folder (e.g. all-MiniLM-L6-v2; the optional
extra ``lt-bench[text]``) or open_clip's text tower with local CLIP weights
(``lt-bench[clip]``). Nothing is downloaded: both read only the files they are given.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lt_bench.backbones.vl_ltr_towers import build_clip, clip_text_encoder
from lt_bench.config import config_dir, group_choices
from lt_bench.config.safe_yaml import read_yaml_file
from lt_bench.errors import LtBenchError

#: prompt templates for classes that have only a name (our wording, in the spirit of CLIP's)
TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a cropped photo of the {}.",
    "a bright photo of the {}.",
)


def read_sentences(path) -> tuple[list[str], list[list[str]]]:
    """``(class names, sentences per class)`` from a YAML mapping name → sentence(s).

    ``path`` is a file, or the name of one shipped in ``configs/anchors/`` (e.g. ``cifar10``).
    """
    file = Path(str(path)).expanduser()
    if not file.is_file() and str(path) in group_choices("anchors"):
        file = config_dir() / "anchors" / f"{path}.yaml"
    if not file.is_file():
        shipped = ", ".join(group_choices("anchors")) or "none"
        raise LtBenchError(f"anchors: sentences file {str(path)!r} not found: give a YAML "
                           "mapping of class name to a list of sentences, in label order, or "
                           f"a shipped one ({shipped})")
    data = read_yaml_file(file, "anchors: sentences file")
    if not isinstance(data, dict) or not data:
        raise LtBenchError(f"anchors: {str(file)!r} must be a YAML mapping of class name to a "
                           "list of sentences")
    names, sentences = [], []
    for name, value in data.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(
                isinstance(t, str) and t.strip() for t in texts):
            raise LtBenchError(f"anchors: {str(file)!r}: class {name!r} needs a non-empty list "
                               "of sentences")
        names.append(str(name))
        sentences.append([t.strip() for t in texts])
    return names, sentences


def sentences_from_names(names: list[str], templates=TEMPLATES) -> list[list[str]]:
    """Each class name put into every template (underscores read as spaces)."""
    for t in templates:
        if "{}" not in t:
            raise LtBenchError(f"anchors: template {t!r} has no {{}} for the class name")
    return [[t.format(name.replace("_", " ")) for t in templates] for name in names]


def sentence_transformers_encoder(folder):
    """A function sentences → [N, D] unit embeddings, from a local sentence-transformers model."""
    model_dir = Path(str(folder)).expanduser()
    if not (model_dir / "modules.json").is_file():
        raise LtBenchError(
            f"anchors: {str(folder)!r} is not a sentence-transformers model folder (no "
            "modules.json); see docs/DATA.md, 'Language anchors' for where to get one")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read the folder; never reach for the hub
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise LtBenchError("anchors: --model needs sentence-transformers: "
                           "pip install 'lt-bench[text]'") from exc
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def encode(sentences: list[str]) -> torch.Tensor:
        out = model.encode(sentences, batch_size=64, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=len(sentences) > 512)
        return out.float().cpu()

    return encode


def clip_encoder(tower: str, weights):
    """A function sentences → [N, D] unit embeddings, from open_clip's text tower."""
    if not weights:
        raise LtBenchError("anchors: --clip needs --weights, a local CLIP checkpoint (the text "
                           "tower must be trained; random weights carry no language)")
    model, tokenizer = build_clip(tower, weights, 224)
    return clip_text_encoder(model.eval(), tokenizer)


def encode_anchors(sentences: list[list[str]], encode) -> tuple[torch.Tensor, torch.Tensor]:
    """``(anchors [C, M, D], counts [C])``: class c's sentences encoded, zero-padded to M."""
    flat = [t for texts in sentences for t in texts]
    embeddings = encode(flat)
    counts = torch.tensor([len(texts) for texts in sentences])
    anchors = torch.zeros(len(sentences), int(counts.max()), embeddings.shape[1])
    start = 0
    for c, n in enumerate(counts.tolist()):
        anchors[c, :n] = embeddings[start:start + n]
        start += n
    return anchors, counts

"""``lt-bench anchors``: write the class text anchors of the VL-LTR-style head from language."""

from __future__ import annotations

from pathlib import Path

from lt_bench.commands.data import load
from lt_bench.data import load_data
from lt_bench.errors import LtBenchError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "anchors", help="write VL-LTR class text anchors from sentences or class names",
        description="Encode sentences about each class with a local text model and write the "
                    "anchors file of the VL-LTR-style head (backbone=vl_ltr "
                    "backbone.anchors=OUT). The sentences come from --sentences (a YAML mapping "
                    "class name -> sentences, in label order, or the name of a shipped one: "
                    "cifar10), or from class names (--names, or a data set given as key=value) "
                    "put into prompt templates. Nothing is downloaded: the model is a local folder "
                    "or file.",
        epilog="Example: lt-bench anchors anchors/cifar10_minilm.pt --model "
               "./models/all-MiniLM-L6-v2 --sentences configs/anchors/cifar10.yaml "
               "dataset=cifar10_lt data.root=./data",
    )
    parser.add_argument("out", metavar="OUT.pt", help="the anchors file to write")
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value",
                        help="a data set whose class names the anchors must match (optional)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR",
                       help="a sentence-transformers model folder, e.g. all-MiniLM-L6-v2 "
                            "(pip install 'lt-bench[text]')")
    model.add_argument("--clip", metavar="TOWER", choices=["RN50", "ViT-B-16"],
                       help="open_clip's text tower of this CLIP (with --weights; "
                            "pip install 'lt-bench[clip]')")
    parser.add_argument("--weights", metavar="FILE", help="the local CLIP checkpoint of --clip")
    parser.add_argument("--sentences", metavar="FILE.yaml",
                        help="class name -> list of sentences, in label order (or a shipped "
                             "name: cifar10)")
    parser.add_argument("--names", metavar="A,B,...",
                        help="class names in label order (each put into the templates)")
    parser.add_argument("--template", action="append", metavar="TEXT",
                        help="a prompt template with {} for the class name (repeatable; "
                             "default: 8 photo templates)")
    parser.set_defaults(func=run)


def class_names_of(args: list[str]) -> list[str] | None:
    """The class names, in label order, of the data set a config selects (None without one)."""
    if not args:
        return None
    from omegaconf import OmegaConf

    cfg = load(args)
    data = load_data(cfg.dataset, cfg.imbalance, OmegaConf.to_container(cfg.data, resolve=True))
    return [str(c) for c in data.classes]


def choose_sentences(args, data_names):
    """``(class names, sentences per class)`` from the options, checked against the data set."""
    # here, not at the top: it imports omegaconf and torch
    from lt_bench.backbones.vl_ltr_text import TEMPLATES, read_sentences, sentences_from_names

    if args.sentences and args.names:
        raise LtBenchError("anchors: give --sentences or --names, not both")
    if args.sentences:
        names, sentences = read_sentences(args.sentences)
        if args.template:
            raise LtBenchError("anchors: --template applies to class names, not to --sentences")
    else:
        names = ([n.strip() for n in args.names.split(",") if n.strip()] if args.names
                 else data_names)
        if not names:
            raise LtBenchError("anchors: no classes: give --sentences FILE.yaml, --names A,B,... "
                               "or a data set (e.g. dataset=cifar10_lt data.root=./data)")
        sentences = sentences_from_names(names, tuple(args.template or TEMPLATES))
    # here, not at the top: it imports torch
    from lt_bench.backbones.vl_ltr_anchors import check_class_names

    check_class_names(names, data_names, args.sentences or "--names",  # None: nothing to check
                      what=f"the sentences file {args.sentences!r}" if args.sentences
                      else "--names" if args.names else None)
    return names, sentences


def nearest_classes(anchors, counts, names) -> str:
    """Each class's nearest other class by mean anchor, the structure language brings."""
    import torch
    import torch.nn.functional as F

    mask = (torch.arange(anchors.shape[1])[None] < counts[:, None]).float()
    means = F.normalize((anchors * mask[..., None]).sum(1) / counts[:, None], dim=-1)
    sim = means @ means.t()
    sim.fill_diagonal_(-2.0)
    best = sim.argmax(dim=1)
    pairs = [f"{names[c]}→{names[j]} {sim[c, j]:.2f}" for c, j in enumerate(best.tolist())]
    return ", ".join(pairs[:12]) + (" …" if len(pairs) > 12 else "")


def run(args) -> int:
    # here, not at the top: it imports torch
    from lt_bench.backbones.vl_ltr_anchors import save_anchors

    # here, not at the top: it imports omegaconf and torch
    from lt_bench.backbones.vl_ltr_text import (
        clip_encoder,
        encode_anchors,
        sentence_transformers_encoder,
    )

    if args.weights and not args.clip:
        raise LtBenchError("anchors: --weights belongs to --clip; a --model folder has its own")
    names, sentences = choose_sentences(args, class_names_of(args.args))
    if args.model:
        encode, encoder = sentence_transformers_encoder(args.model), Path(args.model).name
    else:
        encode, encoder = clip_encoder(args.clip, args.weights), f"clip:{args.clip}"
    anchors, counts = encode_anchors(sentences, encode)
    out = save_anchors(args.out, anchors, counts, names, encoder=encoder, sentences=sentences)
    print(f"wrote {out}: {len(names)} classes, {int(counts.min())}–{int(counts.max())} "
          f"sentences each, dimension {anchors.shape[2]} ({encoder})")
    print(f"nearest class by mean anchor: {nearest_classes(anchors, counts, names)}")
    print(f"use it: backbone=vl_ltr backbone.anchors={out}")
    return 0

"""Image towers of the VL-LTR backbone, and the CLIP pieces read from open_clip.

``tiny`` is a three-layer conv net for tests and smoke runs on CPU; ``resnet32`` is the CIFAR
ResNet-32 with a projection to D, so that the head can be compared with ResNet-32's plain linear
head on CIFAR-LT at equal image network; ``RN50`` and ``ViT-B-16`` come
from open_clip (CLIP with QuickGELU) when it is installed, otherwise from torchvision with a linear
projection to D. Weights are always local files; nothing is ever downloaded. open_clip's text
tower only serves to encode the class prompts once (:func:`clip_text_anchors`).
"""

from __future__ import annotations

import importlib.util
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.backbones import torchvision_models as tv
from lt_bench.backbones.resnet_cifar import resnet32
from lt_bench.backbones.torchvision_models import read_state_dict
from lt_bench.errors import LtBenchError

#: embedding width of the CLIP towers (and the default D of the torchvision fallbacks)
CLIP_DIMS = {"RN50": 1024, "ViT-B-16": 512}
#: towers built here without torchvision or open_clip, for small images (no weights file)
SMALL_TOWERS = ("tiny", "resnet32")
TOWERS = (*SMALL_TOWERS, *CLIP_DIMS)
TOWER_SOURCES = ("auto", "open_clip", "torchvision")
PROMPT = "a photo of a {}."
TINY_DIM = 64


class TinyTower(nn.Module):
    """Three stride-2 3×3 convolutions (16/32/64 channels), average pool, projection to D."""

    def __init__(self, dim: int = TINY_DIM):
        super().__init__()
        layers, width = [], 3
        for out in (16, 32, 64):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width = out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(width, dim)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x).mean(dim=(2, 3)))


class CifarResNetTower(nn.Module):
    """CIFAR ResNet-32's features (64 wide) and a linear projection to D."""

    def __init__(self, dim: int):
        super().__init__()

        self.net = resnet32(num_classes=1)
        width = self.net.fc.in_features
        del self.net.fc  # the head replaces ResNet-32's classifier
        self.proj = nn.Linear(width, dim)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.net.features(x))


class ProjectedTower(nn.Module):
    """A torchvision network whose classifier is replaced by a projection to D."""

    def __init__(self, tower: str, dim: int, weights: str | None, image_size: int):
        super().__init__()

        if tower == "RN50":
            self.net = tv.resnet50(1000, weights=weights)
            self.net.fc = nn.Linear(self.net.fc.in_features, dim)
        else:
            self.net = tv.vit_b_16(1000, weights=weights, image_size=image_size)
            self.net.heads = nn.Linear(self.net.hidden_dim, dim)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClipTower(nn.Module):
    """The image encoder of an open_clip CLIP model (its output is already projected to D)."""

    def __init__(self, visual: nn.Module, dim: int):
        super().__init__()
        self.visual = visual
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out


def open_clip_available() -> bool:
    return importlib.util.find_spec("open_clip") is not None


def import_open_clip():
    """open_clip, or an LtBenchError saying how to install it."""
    try:
        import open_clip
    except ImportError as exc:
        raise LtBenchError(
            "vl_ltr: tower_source='open_clip' needs open-clip-torch: pip install 'lt-bench[clip]' "
            "(or use tower_source=torchvision, or tower=tiny)"
        ) from exc
    return open_clip


def resolve_tower_source(tower: str, tower_source: str) -> str:
    if tower in SMALL_TOWERS:
        return tower
    if tower_source == "auto":
        return "open_clip" if open_clip_available() else "torchvision"
    return tower_source


def is_torchscript(file: Path) -> bool:
    """Whether a file is a TorchScript archive (a zip with a ``code/`` folder)."""
    try:
        with zipfile.ZipFile(file) as archive:
            return any(n.split("/")[1:2] == ["code"] for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_clip_checkpoint(path) -> dict[str, torch.Tensor]:
    """The state dict of a local CLIP checkpoint: OpenAI TorchScript archive or state dict."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise LtBenchError(f"vl_ltr: weights file {str(path)!r} not found: give a local CLIP "
                           "checkpoint (OpenAI .pt or a state dict); nothing is downloaded")
    if is_torchscript(file):  # OpenAI's released checkpoints are TorchScript archives
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.jit.load(str(file), map_location="cpu").state_dict()
        except Exception as exc:
            raise LtBenchError(f"vl_ltr: weights file {str(file)!r} could not be read as a "
                               f"TorchScript CLIP ({type(exc).__name__}: {exc})") from exc
    else:
        state = read_state_dict(file, what="vl_ltr: weights")
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def build_clip(tower: str, weights: str | None, image_size: int):
    """An open_clip CLIP (QuickGELU) with random weights or those of a local checkpoint."""
    open_clip = import_open_clip()
    kwargs = {"force_quick_gelu": True}
    if image_size != 224:
        kwargs["force_image_size"] = int(image_size)
    model = open_clip.create_model(tower, pretrained=None, **kwargs)
    if weights:
        state = read_clip_checkpoint(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise LtBenchError(f"vl_ltr: weights file {str(weights)!r} is not a CLIP {tower} "
                               f"checkpoint: {str(exc).splitlines()[0]}") from exc
    model.float().eval()
    return model, open_clip.get_tokenizer(tower)


@torch.no_grad()
def clip_text_anchors(model, tokenizer, class_names, batch_size: int = 256) -> torch.Tensor:
    """[C, 1, D] L2-normalised CLIP text embeddings of "a photo of a {name}." (on GPU if any)."""
    encode = clip_text_encoder(model, tokenizer, batch_size)
    return encode([PROMPT.format(name.replace("_", " ")) for name in class_names])[:, None, :]


def clip_text_encoder(model, tokenizer, batch_size: int = 256):
    """A function sentences → [N, D] L2-normalised embeddings by CLIP's text tower (on GPU if
    any; the model is back on the CPU after each call)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @torch.no_grad()
    def encode(sentences: list[str]) -> torch.Tensor:
        model.to(device)
        chunks = [F.normalize(model.encode_text(tokenizer(sentences[i:i + batch_size])
                                                .to(device)).float(), dim=-1).cpu()
                  for i in range(0, len(sentences), batch_size)]
        model.to("cpu")
        return torch.cat(chunks)

    return encode

"""torchvision's ResNet-50 and ViT-B/16 with ``num_classes`` outputs, random or from a local file.

Weights are only ever read from a local state-dict file (``weights=path/to/file.pth``), never
downloaded: a file saved with ``torch.save(model.state_dict(), path)`` (a dict nested under
``"state_dict"`` or ``"model"`` is accepted too). When the file's classifier has another number of
classes than asked for, the classifier is left at its random initialisation and everything else
is loaded; a ViT file for another image size has its position embeddings interpolated.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.backbones.heads import fp32_classifier
from lt_bench.errors import LtBenchError


def read_state_dict(path, what: str = "weights") -> dict[str, torch.Tensor]:
    """A state dict from a local ``.pth``/``.pt`` file; LtBenchError naming the path otherwise."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise LtBenchError(
            f"{what} file {str(path)!r} not found: give the path of a local state-dict file "
            "(weights are never downloaded), or leave it unset for random initialisation"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LtBenchError(
            f"{what} file {str(file)!r} could not be read as a PyTorch state dict "
            f"({type(exc).__name__}: {exc}); save it with torch.save(model.state_dict(), path)"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LtBenchError(
            f"{what} file {str(file)!r} is not a state dict (a dict of tensors); save it with "
            "torch.save(model.state_dict(), path)"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path, classifier: str) -> None:
    """Load ``state`` into ``model``; a classifier (prefix ``classifier``) of another shape or
    absent from the file is kept at its random initialisation. Any other missing, unexpected or
    mis-shaped key is an error."""
    own = model.state_dict()
    state = dict(state)
    skipped = [k for k in state if k.startswith(classifier + ".") and k in own
               and state[k].shape != own[k].shape]
    for key in skipped:
        del state[key]
    bad_shape = [k for k in state if k in own and state[k].shape != own[k].shape]
    if bad_shape:
        key = bad_shape[0]
        raise LtBenchError(
            f"weights file {str(path)!r}: {key!r} has shape {tuple(state[key].shape)}, the model "
            f"expects {tuple(own[key].shape)}; is it a checkpoint of this architecture?"
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(classifier + ".")]
    if missing or result.unexpected_keys:
        raise LtBenchError(
            f"weights file {str(path)!r} does not match the model: missing keys "
            f"{missing[:5]}, unexpected keys {list(result.unexpected_keys)[:5]}; is it a "
            "checkpoint of this architecture?"
        )


def resnet50(num_classes: int, *, weights: str | None = None) -> nn.Module:
    """torchvision ResNet-50; weights= a local state-dict file (classifier replaced if needed)."""
    import torchvision

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if weights:
        load_into(model, read_state_dict(weights), weights, classifier="fc")
    fp32_classifier(model.fc)
    return model


def vit_b_16(num_classes: int, *, weights: str | None = None, image_size: int = 224) -> nn.Module:
    """torchvision ViT-B/16 at image_size (a multiple of 16); weights= a local state-dict file."""
    if int(image_size) != image_size or image_size < 16 or image_size % 16:
        raise LtBenchError(f"vit_b_16: image_size must be a multiple of 16, got {image_size!r}")
    import torchvision

    model = torchvision.models.vit_b_16(weights=None, num_classes=num_classes,
                                        image_size=int(image_size))
    if weights:
        state = read_state_dict(weights)
        pos = state.get("encoder.pos_embedding")
        if pos is not None and pos.shape != model.encoder.pos_embedding.shape:
            from torchvision.models.vision_transformer import interpolate_embeddings

            state = dict(interpolate_embeddings(int(image_size), 16, state))
        load_into(model, state, weights, classifier="heads")
    fp32_classifier(model.heads.head)
    size = int(image_size)

    def resize(module, args):
        # ViT's patch grid is fixed at image_size; smaller images (CIFAR's 32 px on the tensor
        # pipeline, which does not resize) are upsampled to it, as ViT-on-CIFAR set-ups do.
        x = args[0]
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x, *args[1:])

    model.register_forward_pre_hook(resize)
    return model

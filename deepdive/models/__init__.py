"""Model construction and checkpoints (format in DESIGN.md, "Models").

    build_model(arch, num_classes, in_channels=1, image_size=28, **kw) -> nn.Module
    make_checkpoint(model, arch, arch_kwargs, ...) -> dict          # the dict DESIGN.md specifies
    make_ensemble_checkpoint(member_checkpoints, ...) -> dict       # {"arch": "ensemble", "members": [...]}
    save_checkpoint(path, checkpoint)                               # atomic
    load_checkpoint(path_or_dict, device="cpu") -> nn.Module        # eval mode; RunError on a bad file
    last_conv_layer(model) -> nn.Module                             # Grad-CAM's layer

Imports only torch and the stdlib (plus our errors/atomic helpers), so it runs on the bare GPU machine.
"""
from pathlib import Path

import torch
import torch.nn as nn

from deepdive.errors import RunError
from deepdive.models.cnn import PIXEL_STATS, ConvNet, Ensemble, Normalize, last_conv_layer
from deepdive.models.stack import StackNet

__all__ = [
    "ARCHS", "PIXEL_STATS", "ConvNet", "Ensemble", "Normalize", "StackNet", "build_model", "last_conv_layer",
    "make_checkpoint", "make_ensemble_checkpoint", "save_checkpoint", "load_checkpoint", "count_parameters",
]

# arch name -> (class, default kwargs). "cnn" is the recipe's net; "cnn-small" halves the widths for tests
# and quick runs; "cnn-wide" doubles them (`best` on CUDA widens by 1.5x through arch_kwargs instead).
# "stack3/5/7" are the no-pooling stacks of 3x3 / 5x5 / 7x7 convs (deepdive.models.stack), a second family
# for ensembles.
ARCHS = {
    "cnn": (ConvNet, {"widths": (32, 64, 128)}),
    "cnn-small": (ConvNet, {"widths": (16, 32, 64)}),
    "cnn-wide": (ConvNet, {"widths": (64, 128, 256)}),
    "stack3": (StackNet, {"kernel": 3}),
    "stack5": (StackNet, {"kernel": 5}),
    "stack7": (StackNet, {"kernel": 7}),
}


def build_model(arch: str = "cnn", num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kw) -> nn.Module:
    """A fresh model. kw override the arch's defaults (e.g. widths=(48, 96, 192), dropout=0.1, mean/std)."""
    if arch not in ARCHS:
        raise RunError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    cls, defaults = ARCHS[arch]
    kwargs = {**defaults, **kw}
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return cls(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_checkpoint(model, arch, arch_kwargs, *, num_classes, in_channels, image_size, class_names=None,
                    epoch=None, preset=None, **extra) -> dict:
    """The checkpoint dict of DESIGN.md. Tensors are copied to the CPU so a checkpoint never holds the GPU."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}
    return {
        "arch": arch, "arch_kwargs": dict(arch_kwargs), "num_classes": int(num_classes),
        "in_channels": int(in_channels), "image_size": int(image_size), "state_dict": state,
        "class_names": list(class_names) if class_names is not None else None,
        "epoch": epoch, "preset": preset, **extra,
    }


def make_ensemble_checkpoint(members: list, **extra) -> dict:
    """An ensemble checkpoint: member checkpoint dicts plus the shared fields copied up for convenience."""
    if not members:
        raise RunError("an ensemble checkpoint needs at least one member")
    first = members[0]
    shared = {k: first.get(k) for k in ("num_classes", "in_channels", "image_size", "class_names", "preset")}
    return {"arch": "ensemble", **shared, "epoch": max((m.get("epoch") or 0) for m in members), **extra,
            "members": list(members)}


def save_checkpoint(path, checkpoint: dict) -> None:
    from deepdive.atomic import atomic_torch_save

    atomic_torch_save(path, checkpoint)


def load_checkpoint(path_or_dict, device="cpu") -> nn.Module:
    """Rebuild the model a checkpoint describes, on `device`, in eval mode.

    Accepts a path or an already-loaded dict. Raises RunError (with the path and the cause) for a missing,
    unreadable or inconsistent checkpoint.
    """
    if isinstance(path_or_dict, dict):
        ckpt, where = path_or_dict, "checkpoint dict"
    else:
        path = Path(path_or_dict)
        where = str(path)
        if not path.is_file():
            raise RunError(f"checkpoint not found: {path}")
        ckpt = _read(path)
    if not isinstance(ckpt, dict) or "arch" not in ckpt:
        raise RunError(f"{where} is not a deepdive checkpoint (expected a dict with an 'arch' key)")
    model = _from_dict(ckpt, where)
    return model.to(device).eval()


def _read(path: Path) -> dict:
    try:
        # Our own checkpoints hold only tensors and plain Python values, so the safe loader reads them.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:
        # A pickled custom module (arch "pickled", from log_evaluation) needs the full unpickler. Only files
        # deepdive wrote itself into the user's own workspace reach this point.
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise RunError(f"cannot read checkpoint {path}: {type(e).__name__}: {e} "
                           "(the file is corrupt, truncated, or its model class is not importable)") from e
        if isinstance(ckpt, dict) and ckpt.get("arch") == "pickled":
            return ckpt
        raise RunError(f"cannot read checkpoint {path}: {type(safe_error).__name__}: {safe_error}") from safe_error


def _from_dict(ckpt: dict, where: str) -> nn.Module:
    arch = ckpt["arch"]
    if arch == "pickled":
        module = ckpt.get("module")
        if not isinstance(module, nn.Module):
            raise RunError(f"{where}: arch 'pickled' but 'module' is {type(module).__name__}, not an nn.Module")
        return module
    if arch == "ensemble":
        members = ckpt.get("members") or []
        if not members:
            raise RunError(f"{where}: ensemble checkpoint has no members")
        return Ensemble([_from_dict(m, f"{where} member {i}") for i, m in enumerate(members)])
    missing = [k for k in ("arch_kwargs", "num_classes", "in_channels", "image_size", "state_dict") if k not in ckpt]
    if missing:
        raise RunError(f"{where}: checkpoint lacks {', '.join(missing)}")
    try:
        model = build_model(arch, ckpt["num_classes"], ckpt["in_channels"], ckpt["image_size"],
                            **ckpt["arch_kwargs"])
    except (TypeError, ValueError, RunError) as e:  # unknown arch, or arch_kwargs this version does not take
        raise RunError(f"{where}: cannot build a {arch!r} model from {ckpt['arch_kwargs']!r}: {e}") from e
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise RunError(f"{where}: weights do not fit a {arch!r} model with {ckpt['arch_kwargs']}: {e}") from e
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    """The eager module behind a torch.compile wrapper (its state_dict keys carry no '_orig_mod.' prefix)."""
    return getattr(model, "_orig_mod", model)

"""What each layer computes for an example: feature maps and a few numbers that make them comparable.

Forward hooks on the model's leaf modules record, in the order they run, the output of every conv, pool,
linear, activation and norm layer (containers, dropout, flatten and custom leaves are skipped), so any
nn.Module classifier works, Sequential or not. Per layer and example:
    active_fraction  share of units > 0 (for a conv output before its ReLU: the units the ReLU will pass)
    dead_channels    channels whose whole map is <= 0 on this input (image-shaped outputs only), dead_fraction
    input_corr_max / input_corr_mean
                     |Pearson r| between each channel map and the input image (mean over its channels, area-
                     averaged to the map's size), max and mean over the non-constant channels: how much the layer
                     still looks like the picture. None for vectors (linear layers) and constant layers.

    compute(model, image (C,H,W)) -> [{name, type, shape, maps, stats}]         # on demand (web)
    activations_stage(model, inputs, focus_idx, out_dir) -> summary             # activations/ files
    architecture(model, example (1,C,H,W)) -> the model's layers as a table (torchinfo's summary, in one list)
"""
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepdive.atomic import atomic_save_npy, atomic_write_text
from deepdive.errors import DeepdiveError

_TYPES = (
    ("conv", (nn.modules.conv._ConvNd,)),
    ("pool", (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
              nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._LPPoolNd)),
    ("linear", (nn.Linear, nn.Bilinear)),
    ("activation", (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Hardswish, nn.Softplus, nn.Sigmoid, nn.Tanh)),
    ("norm", (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm,
              nn.GroupNorm, nn.LocalResponseNorm)),
)


def layer_type(module: nn.Module) -> str | None:
    """'conv' | 'pool' | 'linear' | 'activation' | 'norm', or None for layers the analysis does not show."""
    for name, classes in _TYPES:
        if isinstance(module, classes):
            return name
    return None


@contextmanager
def evaluating(model: nn.Module, grad: bool = False):
    """The model as the analysis stages read it: eval mode; no autograd, or with grad=True autograd to the
    inputs only (parameters frozen). On the CPU also: the channels-last layout oneDNN's convolutions prefer
    (about 1.5× faster forward and backward on our nets, with batches of ~64 that keep activations in cache), and
    one intra-op thread while the machine is oversubscribed (see busy_machine). Everything is restored after."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad] if grad else []
    weights = [p for p in model.parameters() if p.dim() == 4]
    on_cpu = next(model.parameters(), torch.zeros(0)).device.type == "cpu"
    to_channels_last = on_cpu and bool(weights) and not any(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in weights)
    threads = torch.get_num_threads()
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    if to_channels_last:
        model.to(memory_format=torch.channels_last)
    if on_cpu and threads > 1 and busy_machine():
        torch.set_num_threads(1)
    try:
        with torch.set_grad_enabled(grad):
            yield model
    finally:
        torch.set_num_threads(threads)
        if to_channels_last:
            model.to(memory_format=torch.contiguous_format)
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def call_order(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The leaf modules `model` calls on `example`, in call order (a module called twice appears twice)."""
    order = []
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    forward_with_hooks(model, example, [(m, lambda module, args, out: order.append(module)) for m in leaves])
    return order


def forward_with_hooks(model: nn.Module, inputs: torch.Tensor, hooks):
    """model(inputs) in eval mode with forward hooks [(module, fn), ...] attached only for this call."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        with evaluating(model):
            return model(inputs)
    finally:
        for h in handles:
            h.remove()


def busy_machine() -> bool:
    """Whether the 1-minute load average exceeds the core count + 1. torch's OpenMP workers spin at the barrier
    of every op; when one is descheduled the others wait, so on a 2-core machine at load 8 our batched gradient
    loops ran 4-20× slower with 2 threads than with 1."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) + 1
    except (AttributeError, OSError):  # no load average on this platform
        return False


def capture(model: nn.Module, inputs: torch.Tensor) -> list[tuple[str, str, torch.Tensor]]:
    """Run `inputs` (B, C, H, W) through the model; (name, type, output) of each shown layer in forward order.

    A module called twice appears twice ("name", "name#2"). Outputs stay on the model's device."""
    records, calls = [], {}

    def hook(name, kind):
        def record(module, args, output):
            if isinstance(output, torch.Tensor):
                calls[name] = calls.get(name, 0) + 1
                # clone: an in-place activation that follows would overwrite this output
                records.append((name if calls[name] == 1 else f"{name}#{calls[name]}", kind, output.detach().clone()))
        return record

    hooks = [(module, hook(name, kind)) for name, module in model.named_modules()
             if (kind := layer_type(module)) and not any(True for _ in module.children())]
    forward_with_hooks(model, inputs, hooks)
    if not records:
        raise DeepdiveError(f"{type(model).__name__} has no conv, pool, linear, activation or norm layer to show")
    return records


def layer_stats(output: torch.Tensor, inputs: torch.Tensor) -> list[dict]:
    """Per example, the numbers described in the module docstring for one layer's output (B, ...)."""
    b = output.shape[0]
    out = output.float()
    active = (out.reshape(b, -1) > 0).float().mean(1)
    stats = [{"active_fraction": float(a), "dead_channels": None, "dead_fraction": None,
              "input_corr_max": None, "input_corr_mean": None} for a in active.tolist()]
    if out.dim() >= 3:  # (B, C, spatial...): per-channel numbers
        dead = (out.flatten(2).amax(2) <= 0).cpu().numpy()  # (B, C)
        for s, row in zip(stats, dead):
            s["dead_channels"] = np.flatnonzero(row).tolist()
            s["dead_fraction"] = float(row.mean())
    if out.dim() == 4 and inputs.dim() == 4:
        corr_max, corr_mean = input_correlation(out, inputs)
        for s, mx, mn in zip(stats, corr_max, corr_mean):
            s["input_corr_max"], s["input_corr_mean"] = mx, mn
    return stats


def input_correlation(maps: torch.Tensor, inputs: torch.Tensor) -> tuple[list, list]:
    """Max and mean over channels of |Pearson r| between each channel map (B, C, h, w) and the channel-averaged
    input (B, C', H, W) brought to the map's size by area averaging (the map cannot hold finer detail, and this
    costs O(h·w) per channel instead of an upsampling to H×W). Constant channels are left out; None where every
    channel is constant."""
    image = inputs.float().mean(1, keepdim=True)
    if image.shape[-2:] != maps.shape[-2:]:
        image = F.adaptive_avg_pool2d(image, maps.shape[-2:])
    image = image.flatten(1)  # (B, hw)
    flat = maps.float().flatten(2)  # (B, C, hw)
    flat = flat - flat.mean(2, keepdim=True)
    image = image - image.mean(1, keepdim=True)
    cov = torch.einsum("bcp,bp->bc", flat, image)
    norm = flat.norm(dim=2) * image.norm(dim=1, keepdim=True)
    valid = norm > 1e-12
    r = torch.where(valid, cov.abs() / norm.clamp_min(1e-12), torch.zeros_like(cov)).clamp(0, 1)
    counts = valid.sum(1)
    maxima, means = r.amax(1).tolist(), (r.sum(1) / counts.clamp_min(1)).tolist()
    counts = counts.tolist()
    return ([m if n else None for m, n in zip(maxima, counts)], [m if n else None for m, n in zip(means, counts)])


def architecture(model: nn.Module, example: torch.Tensor) -> dict:
    """The model as a table, for a reader of its activations: every leaf module in the order the forward pass
    calls it (a module called twice once, with its count), its type, its output's shape for `example` (batch left
    out), its own parameters and settings (extra_repr). `other_params`: parameters no listed layer holds (used in
    a custom forward directly)."""
    rows, seen = [], {}
    names = {module: name for name, module in model.named_modules()}

    def record(module, args, output):
        if module in seen:
            rows[seen[module]]["calls"] += 1
            return
        out = output if isinstance(output, torch.Tensor) else next(
            (o for o in output if isinstance(o, torch.Tensor)), None) if isinstance(output, (tuple, list)) else None
        params = list(module.parameters(recurse=False))
        seen[module] = len(rows)
        rows.append({"name": names.get(module, "?"), "type": type(module).__name__,
                     "output": None if out is None else list(out.shape[1:]),
                     "params": int(sum(p.numel() for p in params)),
                     "trainable": int(sum(p.numel() for p in params if p.requires_grad)),
                     "details": module.extra_repr()[:160], "calls": 1})

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    forward_with_hooks(model, example.to(_device(model)), [(m, record) for m in leaves])
    unique = {id(p): p for p in model.parameters()}.values()
    total = int(sum(p.numel() for p in unique))
    return {"layers": rows, "total_params": total,
            "trainable_params": int(sum(p.numel() for p in unique if p.requires_grad)),
            "param_bytes": int(sum(p.numel() * p.element_size() for p in unique)),
            "other_params": total - sum(r["params"] for r in rows), "input": list(example.shape[1:])}


def compute(model: nn.Module, image) -> list[dict]:
    """Every shown layer's output for one input image (C, H, W): [{name, type, shape, maps, stats}], maps
    float32 (C, h, w) for image-shaped outputs, (F,) for vectors."""
    x = torch.as_tensor(image).float()
    if x.dim() != 3:
        raise DeepdiveError(f"activations.compute needs one image (C, H, W), got shape {tuple(x.shape)}")
    x = x[None].to(_device(model))
    return [{"name": name, "type": kind, "shape": list(out.shape[1:]), "maps": out[0].float().cpu().numpy(),
             "stats": layer_stats(out, x)[0]}
            for name, kind, out in capture(model, x)]


def activations_stage(model: nn.Module, inputs, focus_idx, out_dir, batch_size: int = 64,
                      progress: bool = False) -> dict:
    """Write `activations/` under out_dir for the focus examples (rows in focus_idx order):
    layers.json [{name, type, shape, file}], <i>_<layer>.npy float16 (n_focus, ...), focus_index.npy, and
    stats.json {focus_idx, layers, per_example: {idx: [stats per layer]}, mean: [mean numbers per layer]}."""
    inputs = torch.as_tensor(inputs)
    focus_idx = np.asarray(focus_idx, np.int64).reshape(-1)
    if not len(focus_idx):
        raise DeepdiveError("activations_stage needs at least one focus example")
    device = _device(model)
    layers, arrays, stats = None, None, []
    starts = range(0, len(focus_idx), batch_size)
    with evaluating(model):  # once for all batches (the layout switch is not free)
        for s in tqdm(starts, desc="activations", unit="batch", disable=not progress or len(starts) < 2,
                      leave=False):
            x = inputs[torch.as_tensor(focus_idx[s:s + batch_size])].float().to(device)
            records = capture(model, x)
            if layers is None:
                layers = [(name, kind) for name, kind, _ in records]
                arrays = [[] for _ in records]
            per_layer = [layer_stats(out, x) for _, _, out in records]
            for k, (_, _, out) in enumerate(records):
                arrays[k].append(_to_float16(out.float().cpu().numpy()))
            stats.extend([layer[i] for layer in per_layer] for i in range(len(x)))

    out = Path(out_dir) / "activations"
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    width = len(str(len(layers) - 1))
    for k, ((name, kind), chunks) in enumerate(zip(layers, arrays)):
        data = np.concatenate(chunks)
        file = f"{k:0{width}d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.npy"
        atomic_save_npy(out / file, data)
        entries.append({"name": name, "type": kind, "shape": list(data.shape[1:]), "file": file})
    atomic_save_npy(out / "focus_index.npy", focus_idx)
    atomic_write_text(out / "layers.json", json.dumps(entries, indent=1))
    atomic_write_text(out / "stats.json", json.dumps({
        "focus_idx": focus_idx.tolist(),
        "layers": [e["name"] for e in entries],
        "per_example": {str(int(i)): row for i, row in zip(focus_idx, stats)},
        "mean": [_mean_stats([row[k] for row in stats]) for k in range(len(entries))],
    }))
    return {"n_focus": int(len(focus_idx)), "layers": [e["name"] for e in entries]}


def _mean_stats(rows: list[dict]) -> dict:
    """Mean of each numeric stat over examples (None where no example has a value)."""
    keys = ("active_fraction", "dead_fraction", "input_corr_max", "input_corr_mean")
    means = {}
    for key in keys:
        values = [r[key] for r in rows if r[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.zeros(0)).device


def _to_float16(a: np.ndarray) -> np.ndarray:
    """float16 without overflow to inf (|values| beyond float16's range are clipped)."""
    return np.clip(a, -65504, 65504).astype(np.float16)

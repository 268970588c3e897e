"""Which learned features an answer rests on. The channels of the last feature map the classifier head reads (the
last layer with a (K, h, w) output before the final Linear: on our nets the last block's ReLU) are the features it
weighs. Each channel is shown by the images of the split that excite it most (feature visualisation by dataset
examples, Olah et al. 2017) and by the classes it fires for; each answer is split over the channels: how much each
one lifts the score of the predicted class over that of the class it is weighed against (an error's label, a right
answer's runner-up), by Captum's LayerGradientXActivation summed over the channel's positions. Where the head is
linear (flatten or pooling, then the final Linear, as on our nets) the contributions add up exactly to the two
scores' difference less the two biases; the summary says how close they come (`completeness`).

    ChannelContributions(model, layer).attribute(inputs, target, versus) -> (N, K) float32
    head_input_layer(model, example) -> the layer; channel_means(model, layer, inputs) -> (N, K)
    other_class(probs, labels) -> (N,)      # the class each answer is weighed against
    strongest(contributions) -> {toward, against}: [[channel, value], ...]
    channels_stage(model, inputs, labels, probs, error_idx, out_dir) -> summary entry

Stored under channels/: top_rows.npy (K, TOP) int32, the rows whose mean activation of each channel is highest,
most first; class_share.npy (K, C) float32, each true class's share of the channel's activation (its rectified
mean activation averaged over the class's images, over the sum of those averages); errors_index.npy (n,) and
errors.npy (n, K) float32, the errors' contributions (prediction over label).
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from deepdive.analysis.activations import _device, evaluating
from deepdive.errors import DeepdiveError

TOP = 8          # images shown per channel
BATCH = 64


def other_class(probs, labels) -> np.ndarray:
    """Per row, the class its answer is weighed against: the label where the answer is wrong, else the runner-up."""
    probs = np.asarray(probs)
    order = np.argsort(probs, axis=1, kind="stable")
    pred, runner = order[:, -1], order[:, -2]
    labels = np.asarray(labels)
    return np.where(pred != labels, labels, runner).astype(np.int64)


class ChannelContributions:
    """Each channel's gradient × activation at `layer` toward one class (minus toward another), summed over its
    positions: the channels' shares of the difference between the two classes' scores."""

    def __init__(self, model: nn.Module, layer: nn.Module):
        from captum.attr import LayerGradientXActivation

        self.model, self.layer = model, layer
        self._method = LayerGradientXActivation(model, layer)

    def attribute(self, inputs, target, versus=None, batch_size: int = BATCH) -> np.ndarray:
        """(N, K) float32 for inputs (N, C, H, W) in the model's scale, target (N,) and versus (N,) or None."""
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        target = torch.as_tensor(np.asarray(target, dtype=np.int64)).reshape(-1)
        versus = None if versus is None else torch.as_tensor(np.asarray(versus, dtype=np.int64)).reshape(-1)
        if len(target) != len(x) or (versus is not None and len(versus) != len(x)):
            raise DeepdiveError(f"channel contributions: {len(x)} inputs but {len(target)} targets")
        device, out = _device(self.model), []
        with evaluating(self.model, grad=True):
            for s in range(0, len(x), batch_size):
                xb = x[s:s + batch_size].to(device).requires_grad_()
                part = self._per_channel(xb, target[s:s + batch_size].to(device))
                if versus is not None:
                    part = part - self._per_channel(xb, versus[s:s + batch_size].to(device))
                out.append(part.detach().float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    def _per_channel(self, x, target):
        a = self._method.attribute(x, target=target)
        return a.flatten(2).sum(2) if a.dim() > 2 else a


def head_input_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last leaf module called before the model's final Linear whose output is a feature map (B, K, h, w)."""
    from deepdive.analysis.activations import forward_with_hooks
    from deepdive.analysis.embedding import final_linear

    head = final_linear(model, example)
    calls = []
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    forward_with_hooks(model, example, [(m, lambda module, args, out: calls.append(
        (module, out.dim() if isinstance(out, torch.Tensor) else 0))) for m in leaves])
    before = [(m, d) for m, d in calls[:max(i for i, (m, _) in enumerate(calls) if m is head)]]
    maps = [m for m, d in before if d == 4]
    if not maps:
        raise DeepdiveError(f"no feature map (K, h, w) reaches the classifier of {type(model).__name__}")
    return maps[-1]


def channel_means(model: nn.Module, layer: nn.Module, inputs, batch_size: int = 256) -> np.ndarray:
    """(N, K) float32: each channel's mean activation over its positions at `layer`, per input."""
    captured = []

    def hook(module, args, output):
        o = output.detach().float()
        captured.append((o.flatten(2).mean(2) if o.dim() > 2 else o).cpu())

    x = torch.as_tensor(inputs)
    device = _device(model)
    handle = layer.register_forward_hook(hook)
    try:
        with evaluating(model):
            for s in range(0, len(x), batch_size):
                model(x[s:s + batch_size].float().to(device))
    finally:
        handle.remove()
    return torch.cat(captured).numpy()


def strongest(contributions, toward: int = 4, against: int = 2) -> dict:
    """The channels that weigh most in one answer: {toward: [[channel, value], ...] (largest positive first),
    against: [[channel, value], ...] (most negative first)}."""
    c = np.asarray(contributions, np.float64)
    order = np.argsort(-c, kind="stable")
    up = [[int(k), round(float(c[k]), 4)] for k in order[:toward] if c[k] > 0]
    down = [[int(k), round(float(c[k]), 4)] for k in order[::-1][:against] if c[k] < 0]
    return {"toward": up, "against": down}


def channels_stage(model: nn.Module, inputs, labels, probs, error_idx, out_dir) -> dict:
    """Write channels/ (see the module docstring) and return the summary entry {available, layer, channels, top,
    errors, versus} or {available: False, reason}."""
    from deepdive.atomic import atomic_save_npy
    from deepdive.models import Ensemble

    if isinstance(model, Ensemble):
        return {"available": False, "reason": "an ensemble's channels belong to its members, each weighed by its "
                                              "own head"}
    x = torch.as_tensor(inputs)
    try:
        layer = head_input_layer(model, x[:1].float().to(_device(model)))
    except DeepdiveError as e:
        return {"available": False, "reason": str(e)}
    name = next((n for n, m in model.named_modules() if m is layer), type(layer).__name__)
    labels = np.asarray(labels, np.int64)
    num_classes = np.asarray(probs).shape[1]
    means = channel_means(model, layer, x)                  # (N, K): the layer's output is a feature map
    top = min(TOP, len(means))
    top_rows = np.argsort(-means, axis=0, kind="stable")[:top].T.astype(np.int32)     # (K, top)
    # per class the mean (not the sum), so a class's size does not make a channel look like its own
    fired = np.clip(means, 0, None)
    per_class = np.stack([fired[labels == c].mean(0) if (labels == c).any() else np.zeros(fired.shape[1])
                          for c in range(num_classes)], axis=1)   # (K, C)
    class_share = (per_class / np.maximum(per_class.sum(1, keepdims=True), 1e-12)).astype(np.float32)

    error_idx = np.asarray(error_idx, np.int64).reshape(-1)
    preds = np.asarray(probs).argmax(1)
    completeness = None
    if len(error_idx):
        xe = x[torch.as_tensor(error_idx)].float()
        contributions = ChannelContributions(model, layer).attribute(xe.numpy(), preds[error_idx], labels[error_idx])
        with evaluating(model), torch.no_grad():
            logits = torch.cat([model(xe[s:s + BATCH].to(_device(model))).float().cpu()
                                for s in range(0, len(xe), BATCH)]).numpy()
        rows = np.arange(len(error_idx))
        gap = logits[rows, preds[error_idx]] - logits[rows, labels[error_idx]]
        # the share of the two scores' difference the channels account for (the rest: the head's biases, and
        # whatever is not linear after the layer)
        ratios = contributions.sum(1) / np.where(np.abs(gap) > 1e-6, gap, np.nan)   # a tie has no share
        completeness = float(np.nanmedian(ratios)) if np.isfinite(ratios).any() else None
    else:
        contributions = np.zeros((0, means.shape[1]), np.float32)
    folder = Path(out_dir) / "channels"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(folder / "top_rows.npy", top_rows)
    atomic_save_npy(folder / "class_share.npy", class_share)
    atomic_save_npy(folder / "errors_index.npy", error_idx)
    atomic_save_npy(folder / "errors.npy", contributions.astype(np.float32))
    # the channels that most often lift an error's answer most: where the model's mistakes gather
    lead = np.bincount(contributions.argmax(1), minlength=means.shape[1]) if len(contributions) else np.zeros(0)
    leading = [{"channel": int(k), "errors": int(lead[k]), "top_class": int(class_share[k].argmax()),
                "share": round(float(class_share[k].max()), 4)}
               for k in np.argsort(-lead, kind="stable")[:3] if lead[k]]
    return {"available": True, "layer": name, "channels": int(means.shape[1]), "top": int(top),
            "errors": int(len(error_idx)), "completeness": completeness, "leading": leading,
            "method": "LayerGradientXActivation summed over positions (Captum)",
            "versus": "an error's label; a right answer's runner-up"}

"""Weight and gradient histograms per parameter, once an epoch: TensorBoard's histograms and distributions, what
W&B's `watch(model)` logs. A layer whose weights stop moving, whose gradients vanish or blow up, or whose spread
runs away shows here before it shows in the loss.

    parameter_histograms(model) -> [{name, kind, lo, hi, mean, std, counts}]   # kind "weight" or "grad"

Each entry: BINS equal bins from lo to hi (the tensor's least and greatest value), the counts in them, and the
exact mean and standard deviation. The gradient is the one the last step left (a single batch's, as W&B's is);
a parameter without one (frozen, or before the first backward pass) has its weights only. Read on the parameters'
device in two transfers however many there are, so a GPU epoch pays two synchronisations, not one per tensor.
"""
import torch

BINS = 30          # TensorBoard's default histogram resolution


def parameter_histograms(model: torch.nn.Module, bins: int = BINS) -> list[dict]:
    """Each parameter's histogram, then its gradient's, in the model's order (module docstring)."""
    tensors = []
    for name, p in model.named_parameters():
        name = name.removeprefix("_orig_mod.")       # a torch.compile'd module's parameters, by their own names
        for kind, t in (("weight", p.detach()), ("grad", p.grad)):
            if t is not None and t.numel():
                tensors.append((name, kind, t.detach().float().reshape(-1)))
    if not tensors:
        return []
    with torch.no_grad():
        stats = torch.stack([torch.stack([t.min(), t.max(), t.mean(), t.std(correction=0)])
                             for _, _, t in tensors]).cpu().tolist()
        spans = [(lo, hi if hi > lo else lo + max(abs(lo) * 1e-6, 1e-12)) for lo, hi, _, _ in stats]
        finite = [all(map(_finite, s)) for s in stats]
        counts = [torch.histc(t, bins=bins, min=lo, max=hi) if ok else torch.zeros(bins, device=t.device)
                  for (_, _, t), (lo, hi), ok in zip(tensors, spans, finite)]
        counts = torch.stack(counts).cpu().to(torch.int64).tolist()
    # a tensor holding NaN or infinities has no histogram to draw: it is left out (its loss says it diverged)
    return [{"name": name, "kind": kind, "lo": lo, "hi": hi, "mean": s[2], "std": s[3], "counts": c}
            for (name, kind, _), (lo, hi), s, c, ok in zip(tensors, spans, stats, counts, finite) if ok]


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")

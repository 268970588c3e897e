"""A 2-D map of how the model sees the examples: penultimate features projected with t-SNE.

    penultimate_features(model, inputs) -> (N, F) float32   # the input of the model's last Linear layer
    project_2d(features, seed=0) -> (N, 2) float32          # PCA to 50 dims, then openTSNE (FFT gradients)

t-SNE settings trade a little polish for speed (10k points in ~14 CPU-seconds, one thread): PCA initialisation,
approximate (Annoy) neighbours above 1000 points, 250 early-exaggeration + 300 normal iterations. The result is
deterministic for a given seed.
"""
import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from deepdive.analysis.activations import _device, call_order, evaluating
from deepdive.errors import DeepdiveError

# Leaf modules that may follow the classifier's last Linear without changing what its input means. BatchNorm1d
# there is a per-class affine map of the logits in eval mode (StackNet's output BatchNorm, after An et al.).
_AFTER_CLASSIFIER = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.Flatten,
                     nn.Softmax, nn.LogSoftmax, nn.BatchNorm1d)
PCA_DIMS = 50
TSNE_ITERATIONS = (250, 300)  # early exaggeration, then normal


def final_linear(model: nn.Module, example: torch.Tensor) -> nn.Linear:
    """The Linear layer that produces the model's output, found by running `example` (B, C, H, W) and looking at
    the last leaf module called (skipping dropout/identity/softmax-like modules)."""
    called = call_order(model, example)
    for module in reversed(called):
        if isinstance(module, _AFTER_CLASSIFIER):
            continue
        if isinstance(module, nn.Linear):
            return module
        raise DeepdiveError(f"the embedding needs a model whose last layer is nn.Linear (its input is the feature "
                            f"vector); {type(model).__name__} ends with {type(module).__name__}")
    raise DeepdiveError(f"the embedding needs a model whose last layer is nn.Linear; {type(model).__name__} "
                        "calls no layer modules")


def penultimate_features(model: nn.Module, inputs, batch_size: int = 128, progress: bool = False) -> np.ndarray:
    """(N, F) float32: the input of the model's final Linear layer for each example, computed in batches.
    For a deepdive Ensemble, the members' features side by side."""
    from deepdive.models import Ensemble

    inputs = torch.as_tensor(inputs)
    if len(inputs) == 0:
        raise DeepdiveError("penultimate_features needs at least one input")
    if isinstance(model, Ensemble):
        return np.concatenate([penultimate_features(m, inputs, batch_size, progress) for m in model.members], 1)
    device = _device(model)
    layer = final_linear(model, inputs[:2].float().to(device))
    captured = []
    handle = layer.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    chunks = []
    starts = range(0, len(inputs), batch_size)
    try:
        with evaluating(model):
            for s in tqdm(starts, desc="features", unit="batch", disable=not progress or len(starts) < 2, leave=False):
                captured.clear()
                model(inputs[s:s + batch_size].float().to(device))
                chunks.append(captured[-1].flatten(1).float().cpu().numpy())
    finally:
        handle.remove()
    return np.concatenate(chunks)


def project_2d(features, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """(N, 2) float32 t-SNE coordinates of `features` (N, F). Fewer than 10 points get the first two principal
    components instead (t-SNE needs a neighbourhood). Deterministic for a given seed.

    n_jobs: openTSNE threads. One by default: 10k points take ~14 CPU-seconds, and on a busy 2-core machine a
    second (spinning) thread made the wall time 1.4-6× longer, not shorter."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    x = np.asarray(features, np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise DeepdiveError(f"project_2d needs finite features of shape (N, F), got {x.shape}")
    n = len(x)
    if n < 10:
        return _pca_2d(x)
    dims = min(PCA_DIMS, n)  # PCA cannot keep more components than there are points
    if x.shape[1] > dims:
        x = PCA(dims, svd_solver="randomized", random_state=seed).fit_transform(x).astype(np.float32)
    early, normal = TSNE_ITERATIONS
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), initialization="pca",
                neighbors="annoy" if n > 1000 else "exact", negative_gradient_method="fft" if n > 1000 else "bh",
                early_exaggeration_iter=early, n_iter=normal, n_jobs=n_jobs, random_state=seed, verbose=False)
    return np.asarray(tsne.fit(x), np.float32)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(0)
    if len(x) < 2 or not np.any(centred):
        return np.zeros((len(x), 2), np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    out = np.zeros((len(x), 2), np.float32)
    out[:, :coords.shape[1]] = coords
    return out

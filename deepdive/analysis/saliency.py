"""Saliency maps with Captum: which pixels push a model's score for a class up or down.

One class per method, one verb each: `attribute(inputs (N,C,H,W), target (N,)) -> Tensor (N,H,W)`, signed,
summed over channels, on the model's own logits. Positive = the pixel supports the class (raising it raises the
score, or, for occlusion, hiding it lowers the score); negative = it argues against the class.

    attribute(model, inputs, target, method) -> np.ndarray float32 (N,H,W)   # batched, any method
    saliency_stage(model, inputs, labels, preds, probs, out_dir)            # the analysis' saliency/ files
    shuffled_weights(model) -> model                                         # the sanity check's randomised copy

A map is only worth reading if it depends on what the model learnt: the stage also draws each class
representative's map with the model's weights shuffled (the model parameter randomisation test of Adebayo et al.,
"Sanity checks for saliency maps", 2018) and reports how alike the two are (Spearman rank correlation of
|attribution|). A method whose maps barely change is tracing the image, not the model.

Costs per image, in forward+backward passes: gradient 1, gradcam ~0.6, smoothgrad 16, integrated_gradients 32,
occlusion 169 forwards (28×28, window 4, stride 2). The stage therefore computes gradient and Grad-CAM class
means over every correct example and the other three over a capped sample per class (CLASS_SAMPLE), and stores
the costly methods' error maps for at most ERROR_CAP errors.
"""
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from captum import attr
from tqdm.auto import tqdm

from deepdive.analysis.activations import _device, _to_float16, call_order, evaluating, layer_type
from deepdive.atomic import atomic_save_npy
from deepdive.errors import DeepdiveError

METHODS = ("gradient", "smoothgrad", "integrated_gradients", "gradcam", "occlusion")

# Correct examples per class whose maps make a class mean (None = all of them). The class representative (most
# confident correct example) is always part of the sample.
CLASS_SAMPLE = {"gradient": None, "gradcam": None, "smoothgrad": 50, "integrated_gradients": 25, "occlusion": 10}
# Errors whose maps are stored (None = all given): the first ones of error_idx, which the caller orders most
# important first. Keeps a weak model's hundreds of errors from costing minutes.
ERROR_CAP = {"gradient": None, "gradcam": None, "smoothgrad": 100, "integrated_gradients": 100, "occlusion": 50}
SANITY_SEED = 0
SANITY_ALIKE = 0.5   # a reading line, not a test: maps ranking at least this alike with shuffled weights "stay alike"


class GradientMap:
    """Signed gradient of the target logit with respect to the input (vanilla saliency, no absolute value)."""

    batch_size = 64  # images per call; ~64 rows per pass keeps a CPU's activations in cache

    def __init__(self, model: nn.Module):
        self._saliency = attr.Saliency(model)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._saliency.attribute(inputs, target=target, abs=False).sum(1)


class SmoothGradMap:
    """Signed gradient averaged over `samples` noisy copies of the input (Gaussian noise, std `stdev`).

    The global generator is reseeded (in a forked RNG state) per call, so the same batch always gets the same maps.
    """

    batch_size = 4  # × samples rows per pass

    def __init__(self, model: nn.Module, stdev: float, samples: int = 16, seed: int = 0):
        self._tunnel = attr.NoiseTunnel(attr.Saliency(model))
        self.stdev, self.samples, self.seed = float(stdev), int(samples), seed

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        devices = [inputs.device.index or 0] if inputs.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            maps = self._tunnel.attribute(inputs, nt_type="smoothgrad", nt_samples=self.samples,
                                          nt_samples_batch_size=self.samples, stdevs=self.stdev,
                                          target=target, abs=False)
        return maps.sum(1)


class IntegratedGradientsMap:
    """Integrated Gradients from a black (all-zero) baseline, `steps` Gauss-Legendre points.

    Completeness: the map sums to logit(x) - logit(baseline) up to the convergence delta.
    """

    batch_size = 8

    def __init__(self, model: nn.Module, steps: int = 32, internal_batch_size: int = 64):
        self._ig = attr.IntegratedGradients(model)
        self.steps, self.internal_batch_size = int(steps), int(internal_batch_size)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor, return_convergence_delta: bool = False):
        result = self._ig.attribute(inputs, baselines=0.0, target=target, n_steps=self.steps,
                                    internal_batch_size=self.internal_batch_size,
                                    return_convergence_delta=return_convergence_delta)
        if return_convergence_delta:
            maps, delta = result
            return maps.sum(1), delta
        return result.sum(1)


class GradCamMap:
    """Grad-CAM on the output of the model's last conv block (see gradcam_layer), kept signed (no ReLU on the
    map) and upsampled bilinearly to the input size, or, for a net that declares a `gradcam_margin` (its maps'
    cells centre only on the input's inner region: unpadded convs), to that inner region, zero outside it. The
    layer is found on the first call unless given."""

    batch_size = 64

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        self.model = model
        self.layer = layer if layer is not None else gradcam_layer(model)  # the conv itself until the first call
        self._resolved = layer is not None
        self._cam = attr.LayerGradCam(model, self.layer)

    @property
    def layer_name(self) -> str:
        return next((n for n, m in self.model.named_modules() if m is self.layer), type(self.layer).__name__)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self._resolved:
            self.layer = gradcam_layer(self.model, inputs[:1].detach())
            self._cam, self._resolved = attr.LayerGradCam(self.model, self.layer), True
        cam = self._cam.attribute(inputs, target=target, relu_attributions=False)  # (N, 1, h, w)
        # Unpadded convs (ConvNet's valid stem, the stack nets) leave maps whose cells centre on the input's inner
        # region only: upsample onto that region and leave the margin at zero rather than stretch the map over it.
        m = _gradcam_margin(self.model)
        h, w = inputs.shape[-2:]
        cam = attr.LayerAttribution.interpolate(cam, (h - 2 * m, w - 2 * m), interpolate_mode="bilinear")
        return F.pad(cam, (m, m, m, m))[:, 0]


def _gradcam_margin(model: nn.Module) -> int:
    """Input pixels per side that the Grad-CAM layer's map does not cover (an Ensemble carries its first member's)."""
    return int(getattr(model, "gradcam_margin", 0))


class OcclusionMap:
    """Drop in the target logit when a `window`×`window` patch (all channels) is set to 0, averaged per pixel."""

    batch_size = 4  # × perturbations_per_eval rows per pass

    def __init__(self, model: nn.Module, window: int = 4, stride: int = 2, perturbations_per_eval: int = 16):
        self._occlusion = attr.Occlusion(model)
        self.window, self.stride, self.perturbations_per_eval = int(window), int(stride), int(perturbations_per_eval)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c, h, w = inputs.shape[1:]
        win = min(self.window, h, w)
        stride = min(self.stride, win)
        with torch.no_grad():
            maps = self._occlusion.attribute(inputs, sliding_window_shapes=(c, win, win), strides=(c, stride, stride),
                                             baselines=0.0, target=target,
                                             perturbations_per_eval=self.perturbations_per_eval)
        return maps.sum(1)


def gradcam_layer(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """The layer Grad-CAM reads: the last conv (deepdive.models' choice for our nets, else the last Conv2d) and,
    given an example input to trace the forward order, the norm/activation modules that directly follow it, so
    the maps are the block's rectified output. (On a conv→BatchNorm→ReLU block the raw conv output ignores BN's
    shift: its Grad-CAM came out ~97% negative for the predicted class on our MNIST net, ~87% positive on the
    ReLU output.) A module that runs more than once (a shared ReLU) ends the block."""
    from deepdive.models import last_conv_layer

    try:
        conv = last_conv_layer(model)
    except ValueError as e:
        raise DeepdiveError(f"Grad-CAM needs a Conv2d layer: {e}") from e
    if example is None:
        return conv
    order = call_order(model, example)
    if conv not in order:
        return conv
    i = max(k for k, m in enumerate(order) if m is conv)
    layer = conv
    for module in order[i + 1:]:
        if layer_type(module) not in ("norm", "activation") or sum(m is module for m in order) > 1:
            break
        layer = module
    return layer


def make_method(method: str, model: nn.Module, inputs):
    """The attribution object for `method`, with data-dependent settings (SmoothGrad's noise: 15% of the input
    range) taken from `inputs`."""
    if method == "gradient":
        return GradientMap(model)
    if method == "smoothgrad":
        x = torch.as_tensor(inputs)
        value_range = float(x.max() - x.min()) if x.numel() else 1.0
        return SmoothGradMap(model, stdev=0.15 * (value_range or 1.0))
    if method == "integrated_gradients":
        return IntegratedGradientsMap(model)
    if method == "gradcam":
        return GradCamMap(model)
    if method == "occlusion":
        return OcclusionMap(model)
    raise DeepdiveError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")


def attribute(model: nn.Module, inputs, target, method: str, batch_size: int | None = None,
              progress: bool = False) -> np.ndarray:
    """Signed maps (N, H, W) float32 of `method` for `target` class per example, computed in batches on the
    model's device. `inputs`: float (N, C, H, W), tensor or array, in the scale the model expects."""
    inputs = _as_float_tensor(inputs)
    target = torch.as_tensor(np.asarray(target), dtype=torch.long)
    if len(target) != len(inputs):
        raise DeepdiveError(f"saliency: {len(inputs)} inputs but {len(target)} targets")
    with evaluating(model, grad=True):
        return _run(make_method(method, model, inputs), inputs, target, _device(model), batch_size, progress, method)


def saliency_stage(model: nn.Module, inputs, labels, preds, probs, out_dir, progress: bool = True, *,
                   error_idx=None, methods=METHODS, class_sample=None, error_cap=None, seed: int = 0) -> dict:
    """Write `saliency/` under out_dir (DESIGN.md "Analysis outputs") and return a summary.

    - errors: for each index in `error_idx` (default: every misclassified example) the maps for the predicted
      and the true class -> `<method>_errors.npy` float16 (n, 2, H, W), rows = the first n of `errors_index.npy`
      (n = all errors, or ERROR_CAP[method] for the costly methods).
    - per class: the mean map over correctly classified examples of that class (for their true class)
      -> `<method>_class_mean.npy` float32 (C, H, W); and the map of the most confident correct example
      -> `<method>_class_rep.npy` (C, H, W), indices in `class_rep_index.npy` (-1: class has no correct example).
    A method that cannot run on this model (Grad-CAM without a conv layer, an op Captum cannot trace) is skipped
    and reported in summary["skipped"]; the other methods still run.
    """
    inputs = _as_float_tensor(inputs)
    labels, preds, probs = np.asarray(labels, np.int64), np.asarray(preds, np.int64), np.asarray(probs)
    num_classes = probs.shape[1]
    correct = labels == preds
    error_idx = np.flatnonzero(~correct) if error_idx is None else np.asarray(error_idx, np.int64).reshape(-1)
    caps = {**CLASS_SAMPLE, **(class_sample or {})}
    error_caps = {**ERROR_CAP, **(error_cap or {})}
    rep_idx = representatives(labels, probs, correct, num_classes)
    out = Path(out_dir) / "saliency"
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out / "errors_index.npy", error_idx)
    atomic_save_npy(out / "class_rep_index.npy", rep_idx)

    summary = {"methods": [], "skipped": {}, "seconds": {}, "n_errors": int(len(error_idx)), "errors_computed": {},
               "image_shape": list(inputs.shape[-2:]), "class_sample_cap": {}, "class_sample_counts": {},
               "settings": {}}
    trained_reps = {}
    with evaluating(model, grad=True):
        for method in methods:
            try:
                engine = make_method(method, model, inputs)
            except DeepdiveError as e:
                summary["skipped"][method] = str(e)
                continue
            start = time.perf_counter()
            sample = class_samples(labels, correct, rep_idx, caps.get(method), seed)
            errors = error_idx[:error_caps.get(method)]  # [:None] keeps all
            n_err = len(errors)
            idx = np.concatenate([errors, errors, sample])
            target = np.concatenate([preds[errors], labels[errors], labels[sample]])
            try:
                maps = _run(engine, inputs[torch.as_tensor(idx)], torch.as_tensor(target), _device(model), None,
                            progress, f"saliency {method}")
            except (RuntimeError, ValueError, AssertionError) as e:  # a method this model cannot take; keep the rest
                summary["skipped"][method] = f"failed: {type(e).__name__}: {e}"
                continue
            err_maps, class_maps = maps[:2 * n_err], maps[2 * n_err:]
            atomic_save_npy(out / f"{method}_errors.npy",
                            _to_float16(err_maps.reshape(2, n_err, *maps.shape[1:]).transpose(1, 0, 2, 3)))
            mean, counts = class_means(class_maps, labels[sample], num_classes)
            atomic_save_npy(out / f"{method}_class_mean.npy", mean)
            atomic_save_npy(out / f"{method}_class_rep.npy", rep_maps(class_maps, sample, rep_idx))
            summary["methods"].append(method)
            summary["seconds"][method] = round(time.perf_counter() - start, 3)
            summary["errors_computed"][method] = n_err
            summary["class_sample_cap"][method] = caps.get(method)
            summary["class_sample_counts"][method] = counts.tolist()
            summary["settings"][method] = _settings(engine)
            trained_reps[method] = rep_maps(class_maps, sample, rep_idx)
    summary["sanity"] = sanity_check(model, inputs, labels, rep_idx, trained_reps, out, progress)
    return summary


def shuffled_weights(model: nn.Module, seed: int = SANITY_SEED) -> nn.Module:
    """A copy of `model` whose every parameter tensor has its values randomly permuted; buffers (BatchNorm's
    running statistics) are kept. The same architecture and weight scales, none of what training put where.
    Adebayo et al. re-initialise instead; a permutation needs no initialiser, so it works on any model (ours
    zero-initialise their classifier, which re-initialised would make every map zero)."""
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            order = torch.randperm(p.numel(), generator=generator).to(p.device)
            p.copy_(p.detach().reshape(-1)[order].reshape(p.shape))
    return clone


def sanity_check(model, inputs, labels, rep_idx, trained_reps: dict, out: Path, progress=False) -> dict:
    """Each method's maps of the class representatives (toward their class) under shuffled_weights(model), saved
    as `<method>_class_random.npy` (C, H, W), and their Spearman rank correlation with the trained model's maps
    of the same images, on |attribution|: {available, seed, alike_at (SANITY_ALIKE, so every reader draws the same
    line), n, rank_correlation {method: mean over the images},
    rank_correlation_nonzero {method: the same over the pixels where the input is not 0}, per_class {method:
    [rho or None]}, skipped {method: why}}. A constant or non-finite map (no rank order) gives None."""
    classes = np.flatnonzero(rep_idx >= 0)
    if not trained_reps or not len(classes):
        return {"available": False, "reason": "no method ran" if not trained_reps else "no correct image"}
    try:
        shuffled = shuffled_weights(model)
    except Exception as e:   # a model deepcopy cannot copy (e.g. holding a file handle): say so, keep the maps
        return {"available": False, "reason": f"the model could not be copied: {type(e).__name__}: {e}"}
    rows, targets = torch.as_tensor(rep_idx[classes]), torch.as_tensor(labels[rep_idx[classes]])
    result = {"available": True, "seed": SANITY_SEED, "alike_at": SANITY_ALIKE, "n": int(len(classes)),
              "rank_correlation": {},
              "rank_correlation_nonzero": {}, "per_class": {}, "skipped": {}}
    with evaluating(shuffled, grad=True):
        for method, trained in trained_reps.items():
            try:
                maps = _run(make_method(method, shuffled, inputs), inputs[rows], targets, _device(shuffled), None,
                            progress, f"sanity {method}")
            except (RuntimeError, ValueError, AssertionError) as e:   # as in the stage: the other methods go on
                result["skipped"][method] = f"failed: {type(e).__name__}: {e}"
                continue
            random = np.zeros_like(trained)
            random[classes] = maps
            atomic_save_npy(out / f"{method}_class_random.npy", random)
            rhos, on_input = [None] * len(rep_idx), []
            for c in classes:
                a, b = np.abs(trained[c]), np.abs(random[c])
                rhos[c] = _rank_correlation(a, b)
                # where the input is 0, integrated gradients and occlusion (baseline 0) give 0 whatever the
                # model: over the other pixels the shared outline drops out
                nonzero = inputs[int(rep_idx[c])].abs().sum(0).numpy() > 0
                on_input.append(_rank_correlation(a[nonzero], b[nonzero]))
            result["per_class"][method] = rhos
            result["rank_correlation"][method] = _mean(rhos)
            result["rank_correlation_nonzero"][method] = _mean(on_input)
    return result


def _rank_correlation(a, b):
    """Spearman's rho of two maps' values, or None when either has no order (constant, or under 3 values)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if len(a) < 3 or not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return round(float(spearmanr(a, b).statistic), 4)


def _mean(values):
    finite = [v for v in values if v is not None]
    return round(float(np.mean(finite)), 4) if finite else None


def representatives(labels, probs, correct, num_classes) -> np.ndarray:
    """Per class, the correctly classified example with the highest probability for its class (-1 if none)."""
    rep = np.full(num_classes, -1, np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(correct & (labels == c))
        if len(members):
            rep[c] = members[np.argmax(probs[members, c])]
    return rep


def class_samples(labels, correct, rep_idx, cap, seed=0) -> np.ndarray:
    """Indices of the correct examples whose maps form the class means: all of them when cap is None, else up to
    `cap` per class (the representative plus a seeded random draw of the others), grouped by class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c, rep in enumerate(rep_idx):
        members = np.flatnonzero(correct & (labels == c))
        if cap is not None and len(members) > cap:
            others = members[members != rep]
            members = np.concatenate([[rep], np.sort(rng.choice(others, cap - 1, replace=False))])
        chosen.append(members)
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)


def class_means(maps: np.ndarray, classes: np.ndarray, num_classes: int):
    """Mean map per class (zeros for a class without maps) and the number of maps behind each mean."""
    sums = np.zeros((num_classes, *maps.shape[1:]), np.float64)
    np.add.at(sums, classes, maps)
    counts = np.bincount(classes, minlength=num_classes)
    return (sums / np.maximum(counts, 1)[:, None, None]).astype(np.float32), counts


def rep_maps(maps: np.ndarray, sample: np.ndarray, rep_idx: np.ndarray) -> np.ndarray:
    """The maps of the class representatives, picked out of the class-sample maps (zeros where rep is -1)."""
    out = np.zeros((len(rep_idx), *maps.shape[1:]), np.float32)
    position = {int(i): k for k, i in enumerate(sample)}
    for c, rep in enumerate(rep_idx):
        if rep >= 0:
            out[c] = maps[position[int(rep)]]
    return out


def _run(engine, inputs: torch.Tensor, target: torch.Tensor, device, batch_size, progress,
         desc="saliency") -> np.ndarray:
    """Apply engine.attribute batch by batch on `device`; (N, H, W) float32."""
    batch_size = batch_size or engine.batch_size
    out = np.zeros((len(inputs), *inputs.shape[-2:]), np.float32)
    starts = range(0, len(inputs), batch_size)
    for s in tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2, leave=False):
        x = inputs[s:s + batch_size].to(device, copy=True).requires_grad_()  # gradients flow to the inputs only
        t = target[s:s + batch_size].to(device)
        out[s:s + len(x)] = engine.attribute(x, t).detach().float().cpu().numpy()
    return out


def _as_float_tensor(inputs) -> torch.Tensor:
    x = torch.as_tensor(inputs).detach()
    if x.dim() != 4:
        raise DeepdiveError(f"saliency needs inputs of shape (N, C, H, W), got {tuple(x.shape)}")
    return x.float()


def _settings(engine) -> dict:
    if isinstance(engine, SmoothGradMap):
        return {"samples": engine.samples, "stdev": round(engine.stdev, 6), "seed": engine.seed}
    if isinstance(engine, IntegratedGradientsMap):
        return {"steps": engine.steps, "baseline": 0.0}
    if isinstance(engine, GradCamMap):
        return {"layer": engine.layer_name, "upsampling": "bilinear", "margin": _gradcam_margin(engine.model)}
    if isinstance(engine, OcclusionMap):
        return {"window": engine.window, "stride": engine.stride, "baseline": 0.0}
    return {}

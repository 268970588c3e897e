"""A picture the analysis never saw, through the run's model: what a person draws, uploads or edits in the
dashboard's Try view. It gets what the deep dive gives an analysed image: all class probabilities, signed saliency
toward the predicted class (and the class it should be), every layer's feature maps, its answers under the
augmentation advice's perturbations and its nearest training images, so a person can change a stroke and watch
which of them moves.

    result = probe(model, x, num_classes, method="gradient", targets=[4])   # x float32 (C, H, W), model's scale
    result.probs (num_classes,), result.maps {class: (H, W)}, result.layers (activations.compute's)
    perturbed(model, picture, num_classes, to_inputs) -> [{id, label, picture, probs}]   # the advice's probes
    features = TrainingFeatures(model, reference)        # once per run: every training image's features
    features.nearest(model, x) -> (dataset indices, labels, similarities), most similar first

Measured on the demo model (Zen 5 host, 2 threads, median of 5): a probe 4 ms without
saliency, 6 ms with gradient, 29 ms with occlusion; the training features of 55,000 images 7.2 s and 253 MB kept
(1,152 float32 features each; ~1 GB at the peak while computed), then ~15 ms per search.
"""
from dataclasses import dataclass

import numpy as np

from deepdive.errors import DeepdiveError


def input_field(run_dir, split: str | None = None):
    """What a new picture must become for a run's model: (shape (C, H, W), display scale (low, span)) of the
    inputs stored with a run of your own (the scale whose inverse turns a picture in [0, 1] into the model's
    numbers: deepdive.analysis.display_scale), of `split`, or by default of the first split stored (test, val, any
    other, train last); None where none is stored (a run trained on a built-in dataset)."""
    from pathlib import Path

    from deepdive.analysis import display_scale, stored_inputs

    folder = Path(run_dir) / "eval"
    found = {p.name.rsplit("_", 1)[0] for p in folder.glob("*.npy") if p.name.endswith(("_inputs.npy", "_codes.npy"))}
    order = [split] if split else sorted(found, key=lambda s: ({"test": 0, "val": 1, "train": 3}.get(s, 2), s))
    for name in order:
        stored = stored_inputs.load(folder, name)
        if stored is not None:
            inputs = stored.read()
            return tuple(inputs.shape[1:]), display_scale(inputs)
    return None


@dataclass
class Probe:
    probs: np.ndarray      # (num_classes,) float32
    maps: dict             # target class -> signed (H, W) float32 map of the method
    layers: list           # [{name, type, shape, maps, stats}] as deepdive.analysis.activations.compute gives


def probe(model, x, num_classes: int, method: str | None = None, targets=()) -> Probe:
    """The model's answer for one input x (C, H, W) in the scale the model takes, the signed maps of saliency
    `method` (None: none) toward the predicted class and each class in `targets`, and its layers' outputs."""
    from deepdive.analysis import predict
    from deepdive.analysis.activations import compute
    from deepdive.analysis.saliency import attribute

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise DeepdiveError(f"probe needs one input (C, H, W), got shape {x.shape}")
    probs = predict(model, x[None], np.zeros(1, np.int64), num_classes)[0][0]
    classes = list(dict.fromkeys([int(probs.argmax()), *(int(t) for t in targets)]))
    if any(not 0 <= c < num_classes for c in classes):
        raise DeepdiveError(f"saliency targets {classes} are not all classes 0..{num_classes - 1}")
    maps = {}
    if method:
        maps = dict(zip(classes, attribute(model, np.repeat(x[None], len(classes), axis=0), classes, method)))
    return Probe(probs=probs, maps=maps, layers=compute(model, x))


def perturbed(model, picture, num_classes: int, to_inputs) -> list[dict]:
    """The augmentation advice's perturbations (deepdive.analysis.advice.PERTURBATIONS, the unchanged one left out)
    of one picture (C, H, W) in [0, 1] with 0 the background, each with the model's probabilities:
    [{id, label, picture (C, H, W) float32 in [0, 1], probs (num_classes,)}]. They act on the picture as shown, so
    a rotation fills in the background colour even where the model's inputs are normalised; to_inputs maps the
    pictures (N, C, H, W) in [0, 1] to the model's inputs."""
    import torch

    from deepdive.analysis import predict
    from deepdive.analysis.advice import PERTURBATIONS

    x = torch.as_tensor(np.asarray(picture, dtype=np.float32))[None]
    if x.dim() != 4:
        raise DeepdiveError(f"perturbed needs one picture (C, H, W), got shape {tuple(x.shape[1:])}")
    shown = [p for p in PERTURBATIONS if p.id != "none"]
    pictures = torch.cat([p.apply(x) for p in shown]).clamp(0, 1).numpy()
    probs = predict(model, to_inputs(pictures), np.zeros(len(shown), np.int64), num_classes)[0]
    return [{"id": p.id, "label": p.label, "picture": pic, "probs": pr} for p, pic, pr in zip(shown, pictures, probs)]


class TrainingFeatures:
    """The penultimate features of a run's training images (a neighbours.Reference), unit length, computed once:
    any new picture's nearest training images are then one matrix-vector product away."""

    def __init__(self, model, reference):
        from deepdive.analysis.embedding import penultimate_features

        self.reference = reference
        features = penultimate_features(model, reference.model_inputs(), batch_size=500)
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)   # in place: no second copy
        self.unit = features

    def nearest(self, model, x, k: int | None = None):
        """(dataset indices (k,), labels (k,), cosine similarities (k,)) of the training images nearest to input x
        (C, H, W), most similar first: the analysis's measure (deepdive.analysis.neighbours)."""
        from deepdive.analysis.embedding import penultimate_features
        from deepdive.analysis.neighbours import K, nearest

        query = penultimate_features(model, np.asarray(x, dtype=np.float32)[None])
        positions, sims = nearest(query, self.unit, k=k or K, unit_references=True)
        idx = self.reference.idx[positions[0]]
        return idx, self.reference.labels[idx], sims[0]

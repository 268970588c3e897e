"""The training images behind each mistake: TracIn (Pruthi et al. 2020) through Captum's TracInCPFast.

A training image's influence on a test image is how much a gradient step on it lowered the test image's loss at
its true label: the dot product of the two loss gradients, here those of the model's last Linear layer (Captum's
TracInCPFast: the gradient at the layer's output times its input, for both images). Negative: training on that
image pushed the test image away from its label, toward the mistake ("against"); positive: toward the right
answer ("for"). One checkpoint, the final model: the recipe keeps no per-epoch weights, so this is the influence
as the trained model sees it (TracIn with one checkpoint, close to a representer-point reading; Yeh et al. 2018).
A well-learnt training image has a near-zero gradient, so the images with weight are those the model still finds
hard: on MNIST, training images whose label looks wrong. The training loss is the recipe's (its label smoothing),
the test loss plain cross-entropy at the label.

    influence_stage(model, inputs, labels, error_rows, reference, label_smoothing, out_dir) -> summary entry

Writes out_dir/influence/{rows, against_index, against_label, against_score, for_index, for_label, for_score}.npy:
the errors' rows and, per row, the K training images most against and most for its label (dataset indices, most
influential first, their labels as trained and their scores). Summary: behind: the training images among the K
against the most errors, [[dataset index, label, errors, summed score, doubted]], at most LISTED.

Measured (2026-12-06, Zen 5 host, the demo's 29 errors against its 55,000 training images): see the README.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from deepdive.analysis.results import INFLUENCE_FILES as FILES

K = 8          # training images kept per error and side
LISTED = 24    # training images behind the most errors, in the summary
BATCH = 2000   # training images per TracIn batch (Captum recomputes the errors' gradients for each one)
SCORES = 1 << 27   # scores held at once (512 MB of float32): the errors go in groups of SCORES // training images


class _OnDevice(torch.utils.data.Dataset):
    """Whole batches by a list of positions, on the model's device (a DataLoader with a BatchSampler and no
    collation: no per-image stacking of 55,000 tensors)."""

    def __init__(self, inputs, labels, device):
        self.inputs, self.labels, self.device = inputs, labels, device

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, rows):
        return self.inputs[rows].to(self.device), self.labels[rows].to(self.device)


class _AsLogits(nn.Module):
    """The model with probability outputs (a softmax last) turned back into logits by their log, as predict()
    reads them. Captum takes the loss gradient at the model's output for the one at its last Linear layer's: with
    logits (or a log_softmax, or this) both are p - y; through a softmax they are not."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        from deepdive.analysis import as_logits

        return as_logits(self.model(x))


def influence_scores(model, inputs, labels, train_inputs, train_labels, label_smoothing=0.0, progress=False):
    """(E, M) float32 tensor: TracIn scores (one checkpoint, the model as it is) of M training images on E test
    images at their labels, through Captum's TracInCPFast on the model's last Linear layer."""
    from captum.influence import TracInCPFast
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    from deepdive.analysis.activations import _device, evaluating
    from deepdive.analysis.embedding import final_linear

    device = _device(model)
    x, y = torch.as_tensor(inputs).float().to(device), torch.as_tensor(labels).long().to(device)
    train = _OnDevice(torch.as_tensor(train_inputs).float(), torch.as_tensor(train_labels).long(), device)
    batches = DataLoader(train, batch_size=None,
                         sampler=BatchSampler(SequentialSampler(range(len(train))), BATCH, drop_last=False))
    with evaluating(model):
        layer = final_linear(model, x[:2])
        tracin = TracInCPFast(_AsLogits(model), layer, batches, ["final model"],
                              checkpoints_load_func=lambda m, path: 1.0,    # the model holds the weights already
                              loss_fn=nn.CrossEntropyLoss(reduction="sum", label_smoothing=label_smoothing),
                              test_loss_fn=nn.CrossEntropyLoss(reduction="sum"))
        scores = tracin.influence((x, y), k=None, show_progress=progress)
    return scores.detach().float().cpu()


def influence_stage(model, inputs, labels, error_rows, reference, label_smoothing, out_dir, progress=False,
                    doubted=None) -> dict:
    """Score every training image of `reference` on each error row (TracIn, module docstring), keep the K most
    against and for each, write them under out_dir/influence/ and return the summary entry. doubted: dataset
    indices of training images whose label the training dynamics doubt (negative AUM), to mark them."""
    from deepdive.atomic import atomic_save_npy
    from deepdive.models import Ensemble

    if reference is None:
        return {"available": False, "reason": "the run has no training images (logged with log_evaluation "
                                              "without train_data), so there is nothing to weigh"}
    if isinstance(model, Ensemble):
        return {"available": False, "reason": "an ensemble has no single last layer: each member learnt from the "
                                              "training images in its own way"}
    rows = np.asarray(error_rows, np.int64)
    k = min(K, len(reference.idx))
    entry = {"available": True, "method": "TracIn (Captum TracInCPFast), last layer, one checkpoint: the final model",
             "k": int(k), "errors": int(len(rows)), "reference": reference.name,
             "reference_size": int(len(reference.idx)), "label_smoothing": float(label_smoothing)}
    trained_labels = reference.labels[reference.idx]
    against_pos = for_pos = np.zeros((0, k), np.int64)
    against_score = for_score = np.zeros((0, k), np.float32)
    if len(rows):
        train_inputs = reference.model_inputs()
        group = max(1, SCORES // len(train_inputs))     # one pass over the training images per group of errors
        parts = []
        for s in range(0, len(rows), group):
            at = rows[s:s + group]
            parts.append(strongest(influence_scores(model, np.asarray(inputs)[at], np.asarray(labels)[at],
                                                    train_inputs, trained_labels, label_smoothing, progress), k))
        against_pos, against_score, for_pos, for_score = (np.concatenate(p) for p in zip(*parts))
    folder = Path(out_dir) / "influence"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rows.astype(np.int32), reference.idx[against_pos].astype(np.int32),
              trained_labels[against_pos].astype(np.int16), against_score.astype(np.float32),
              reference.idx[for_pos].astype(np.int32), trained_labels[for_pos].astype(np.int16),
              for_score.astype(np.float32))
    for name, array in zip(FILES, arrays):
        atomic_save_npy(folder / f"{name}.npy", array)
    entry["behind"] = behind(against_pos, against_score, reference, doubted)
    entry["doubts_known"] = doubted is not None    # the run kept its training dynamics: "doubted" means something
    return entry


def strongest(scores, k: int):
    """(against positions, their scores, for positions, their scores), numpy (E, k) each: per row of TracIn scores
    (E, M) the k most negative (most against the label), most negative first, and the k most positive."""
    against, toward = torch.topk(-scores, k, dim=1), torch.topk(scores, k, dim=1)
    return against.indices.numpy(), -against.values.numpy(), toward.indices.numpy(), toward.values.numpy()


def behind(positions, scores, reference, doubted=None) -> list:
    """The training images among the K against the most errors: [[dataset index, label, errors, summed score,
    doubted (1/0)]], most errors first, then the most negative sum; at most LISTED."""
    if not len(positions):
        return []
    flat, weight = positions.reshape(-1), scores.reshape(-1)
    unique, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    total = np.zeros(len(unique))
    np.add.at(total, inverse, weight)
    order = np.lexsort((total, -counts))[:LISTED]
    doubted = set() if doubted is None else set(int(i) for i in doubted)
    idx = reference.idx[unique[order]]
    return [[int(i), int(reference.labels[i]), int(c), round(float(s), 6), int(int(i) in doubted)]
            for i, c, s in zip(idx, counts[order], total[order])]

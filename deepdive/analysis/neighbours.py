"""Nearest training images: for every analysed image, the K training images the model sees as most alike, with the
labels it learnt them under.

"Alike" is the cosine similarity of penultimate features (the embedding's features: the input of the last Linear
layer). This is the deep k-nearest-neighbours reading of a prediction (Papernot & McDaniel, 2018): a misclassified
4 whose neighbours are training 9s sits among 9s in the model's own feature space (the pictures tell whether they
are look-alikes or 4s labelled 9); a 4 among training 4s that is still called 9 is a decision the last layer made
against its neighbourhood. The features are shaped by the labels, so most errors sit among their prediction's
class: the pictures, more than the counts, are the point.

    reference_set(run) -> Reference | None                 # the run's training images, labels as trained on
    nearest(queries, references, k) -> (positions, sims)   # exact cosine top-k, chunked
    neighbours_stage(model, features, reference, frame, out_dir, exclude=None) -> summary entry  # neighbours/
    readings(labels, true, pred) -> "prediction" | "label" | "mixed" per row      # frame["neighbours"]

Stored per analysed row: `neighbours/index.npy` (N, K) training-set indices, `similarity.npy` (N, K) float32,
`label.npy` (N, K) their labels. Measured on the demo (default preset, 10,000 test images against 55,000
training images, 1,152 features, Zen 5 host, 2026-12-05): 7.5 s for the training features, 7.1 s for the search;
the neighbours' majority label is the true label for 99.68% of the test images (the model: 99.71%).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepdive.analysis import atypical
from deepdive.analysis.results import NEIGHBOUR_FILES
from deepdive.errors import DeepdiveError

K = 8
CHUNK = 512    # queries per similarity block: 512 x 55,000 float32 is 113 MB


@dataclass
class Reference:
    """Training images as the model learnt them: labels after the run's reviews, dataset indices, and either uint8
    images (a built-in dataset; the model takes images / 255) or the model's own float inputs (log_evaluation's
    train_data)."""
    images: np.ndarray | None
    labels: np.ndarray
    idx: np.ndarray
    name: str                        # "mnist training images"
    inputs: object = None            # deepdive.analysis.stored_inputs.StoredInputs: float32 rows by index

    def model_inputs(self):
        """float32 tensor (M, C, H, W) of the reference images as the model takes them."""
        import torch

        if self.inputs is not None:
            return torch.from_numpy(np.ascontiguousarray(self.inputs[self.idx], dtype=np.float32))
        images = self.images[self.idx]
        chw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
        return torch.from_numpy(chw.astype(np.float32) / 255.0)


def reference_set(run) -> Reference | None:
    """The training images run `run` trained on (its training indices, reviewed labels applied: relabelled images
    carry their new label, left-out ones are not there); for a run logged with log_evaluation, the train_data it
    was given. None without any."""
    if run.dataset == "custom":
        from deepdive.analysis import stored_inputs

        folder = run.run_dir / "eval"
        inputs = stored_inputs.load(folder, "train")
        if inputs is None:
            return None
        labels = np.load(folder / "train_labels.npy").astype(np.int64)
        return Reference(images=None, labels=labels, idx=np.arange(len(labels)), inputs=inputs,
                         name="training images given to log_evaluation")
    from deepdive.analysis import _dataset
    from deepdive.analysis.label_issues import training_indices
    from deepdive.train.recipe import apply_reviewed_labels

    ds = _dataset(run)
    idx = training_indices(ds.train_labels, run.config)
    labels, idx, _ = apply_reviewed_labels(ds.train_labels, idx, np.zeros(0, np.int64),
                                           run.config.get("reviewed_labels"))
    return Reference(images=ds.train_images, labels=labels, idx=np.asarray(idx, np.int64),
                     name=f"{run.dataset} training images")


def nearest(queries, references, k: int = K, chunk: int = CHUNK, unit_references: bool = False):
    """(positions (N, k) int64 into `references`, similarities (N, k) float32), most similar first: exact cosine
    similarity of the rows of `queries` (N, F) to those of `references` (M, F), in fp32 (a bf16 product was 2.8x
    faster here but changed 12% of the nearest neighbours on the demo). unit_references: their rows are unit
    length already (no normalised copy is made)."""
    import torch

    q = torch.as_tensor(np.asarray(queries, np.float32))
    r = torch.as_tensor(np.asarray(references, np.float32))
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise DeepdiveError(f"nearest needs (N, F) queries and (M, F) references, got {tuple(q.shape)} and "
                            f"{tuple(r.shape)}")
    if len(r) == 0:
        raise DeepdiveError("nearest needs at least one reference")
    k = min(k, len(r))
    q = torch.nn.functional.normalize(q, dim=1)
    if not unit_references:
        r = torch.nn.functional.normalize(r, dim=1)
    positions, sims = [], []
    with torch.no_grad():
        for start in range(0, len(q), chunk):
            values, where = (q[start:start + chunk] @ r.T).topk(k, dim=1)
            positions.append(where)
            sims.append(values)
    if not positions:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return torch.cat(positions).numpy().astype(np.int64), torch.cat(sims).numpy().astype(np.float32)


def without_own(positions, sims, own, k: int):
    """The first k of each row's (positions, sims) (N, k + 1), most similar first, leaving out the one marked in
    `own` (bool, same shape): the row's own image, searched among the references it belongs to; a row whose own
    image was not among them loses its least similar (a stable sort keeps the others' order)."""
    keep = np.argsort(own, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(positions, keep, 1), np.take_along_axis(sims, keep, 1)


READINGS = ("prediction", "label", "mixed")


def readings(labels, true, pred) -> np.ndarray:
    """Which answer each image's neighbours back (labels (N, K), true and pred (N,)): 'prediction' when more than
    half carry the predicted class (and it is not the label), 'label' when more than half carry the true label,
    else 'mixed'."""
    labels = np.asarray(labels)
    true, pred = np.asarray(true)[:, None], np.asarray(pred)[:, None]
    half = labels.shape[1] / 2
    backs_pred = (pred != true)[:, 0] & ((labels == pred).sum(axis=1) > half)
    backs_label = (labels == true).sum(axis=1) > half
    return np.where(backs_pred, "prediction", np.where(backs_label, "label", "mixed")).astype(object)


def neighbours_stage(model, features, reference: Reference | None, frame, out_dir: Path, progress=True,
                     exclude=None) -> dict:
    """Find each row's K nearest training images and store them under out_dir/neighbours/, and each row's reading
    in frame["neighbours"]. `features` are the rows' penultimate features (N, F); exclude: the rows' own
    training-set indices when they are training images themselves (each is then not its own neighbour). Returns
    the summary entry (counts of the errors' readings; "atypical": deepdive.analysis.atypical's). Also
    frame["neighbour_agreement"]: the share of each row's neighbours that carry its predicted class (a trust score,
    deepdive.analysis.confidence), and frame["knn_distance"], ["atypicality"], ["atypical"] (atypical.py)."""
    from deepdive.analysis.embedding import penultimate_features
    from deepdive.atomic import atomic_save_npy

    if reference is None:
        return {"available": False, "reason": "the run has no training images (logged with log_evaluation "
                                              "without train_data), so there is nothing to search"}
    if exclude is not None and np.array_equal(reference.idx, exclude):
        ref_features = features    # the rows are the reference itself (the train split without reviews)
    else:
        ref_features = penultimate_features(model, reference.model_inputs(), batch_size=500, progress=progress)
    positions, sims = nearest(features, ref_features, k=K + (exclude is not None))
    if exclude is not None:
        own = reference.idx[positions] == np.asarray(exclude, np.int64)[:, None]
        positions, sims = without_own(positions, sims, own, positions.shape[1] - 1)
    labels = reference.labels[reference.idx[positions]]
    folder = Path(out_dir) / "neighbours"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (reference.idx[positions].astype(np.int32), sims, labels.astype(np.int16))
    for name, array in zip(NEIGHBOUR_FILES, arrays):
        atomic_save_npy(folder / f"{name}.npy", array)

    true, pred = frame["true"].to_numpy(), frame["pred"].to_numpy()
    typical = atypical.atypical_entry(atypical.knn_distance(sims),
                                      atypical.reference_distances(ref_features, k=positions.shape[1]), frame)
    frame["neighbours"] = readings(labels, true, pred)
    frame["neighbour_agreement"] = (labels == pred[:, None]).mean(axis=1).astype(np.float32)
    wrong = frame["neighbours"].to_numpy()[true != pred]
    counts = {name: int((wrong == name).sum()) for name in READINGS}
    plurality = np.array([np.bincount(row).argmax() for row in labels]) if len(labels) else np.zeros(0, int)
    return {"available": True, "k": int(positions.shape[1]), "reference": reference.name,
            "reference_size": int(len(reference.idx)), "features": int(np.asarray(features).shape[1]),
            "similarity": "cosine of penultimate features",
            "knn_accuracy": float((plurality == true).mean()) if len(true) else None,
            "errors": counts, "atypical": typical}

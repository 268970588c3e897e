"""The deep dive: `analyze(store, run_id, split)` computes every analysis output of a run (DESIGN.md, "Analysis
outputs") and stores it in the run folder and the store's analyses row.

Each stage is timed (summary["stage_seconds"]). The outputs are written into `analysis/<split>.tmp-XXXX/` and
swapped in only when everything succeeded, and the store row is written after the swap (rolled back if that
fails), so a failed re-analysis leaves the previous one readable.

Importing this package stays cheap (numpy/pandas only); torch, cleanlab and the model stages load on use.
"""
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepdive.errors import DeepdiveError, RunError

__all__ = ["analyze", "predict", "FOCUS_ERROR_CAP"]

FOCUS_ERROR_CAP = 300      # errors with precomputed activations: the most confident ones if there are more
FOCUS_LABEL_ISSUES = 20    # top-ranked label issues added to the focus set
TOP_CONFUSIONS = 10
NO_MODEL = "the model could not be loaded, so it has no features to compare"   # why there are no neighbours
STALE_TMP_SECONDS = 3600   # leftovers of a crashed analysis older than this are removed
STORED_CHECK_EXAMPLES = 256
STORED_TOLERANCE = 0.01    # max |p| difference: GPU vs CPU numerics differ by far less, a different model by more


@dataclass
class SplitData:
    """One split as the model sees it: inputs float32 (N, C, H, W) in the model's input scale, display images
    uint8, labels, dataset indices, and precomputed probabilities/losses when stored ones fit."""
    inputs: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    idx: np.ndarray
    probs: np.ndarray | None = None
    losses: np.ndarray | None = None
    source: str = ""
    dataset: object = None            # train split only: the Dataset the K folds retrain on
    folds: np.ndarray | None = None   # train split only: the fold that held each example out


class _Stages:
    """Times named stages and shows them as one progress bar."""

    def __init__(self, names, progress, desc):
        from tqdm.auto import tqdm

        self.seconds = {}
        self.bar = tqdm(total=len(names), desc=desc, unit="stage", disable=not progress, leave=False)

    @contextmanager
    def __call__(self, name):
        self.bar.set_postfix_str(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)
            self.bar.update(1)

    def close(self):
        self.bar.close()


MODEL_STAGES = ("saliency", "activations", "channels", "embedding", "neighbours", "influence", "robustness",
                "advice")
STAGES = ("load", "predict", "tables", "ranking", "label_issues", "taxonomy", "insight", "dynamics", "duplicates",
          "slices", *MODEL_STAGES,
          "confidence", "write")


def _no_model_stages(reason: str) -> dict:
    """Summary entries of an analysis without model stages (train split, or a model that cannot be loaded)."""
    return {"saliency": {"methods": []}, "activations": {"available": False}, "architecture": {"available": False},
            "embedding": {"available": False},
            "neighbours": {"available": False, "reason": reason}, "channels": {"available": False, "reason": reason},
            "influence": {"available": False, "reason": reason}, "robustness": {"available": False, "reason": reason}}


def analyze(store, run_id, split="test", progress=True, *, model=None, device=None, folds=5,
            robustness_sample=500) -> dict:      # robustness.SAMPLE (not imported here: it loads torch)
    """Analyse a finished run on `split` ("test", "val", or "train" = K-fold label issues) and store it.

    model: an in-memory model to use instead of the run's checkpoint (log_evaluation passes the user's model).
    device: where model stages run; default the in-memory model's device, else the CPU.
    folds: K for the train split's cross-validated probabilities.
    robustness_sample: pictures drawn for the robustness search (deepdive.analysis.robustness; its right answers are
    tried, the errors always); 0 skips the search.
    Returns the summary dict (also in summary.json and store.analysis(run_id, split)).
    """
    from deepdive.analysis import (confidence, duplicates, dynamics, insight, label_issues, neighbours, ranking,
                                   slices, tables, taxonomy)
    from deepdive.malloc import keep_freed_memory

    if not isinstance(robustness_sample, int) or isinstance(robustness_sample, bool) or robustness_sample < 0:
        raise DeepdiveError(f"robustness_sample must be an integer >= 0, got {robustness_sample!r}")
    keep_freed_memory()      # the batched forward passes below allocate the same large blocks over and over
    run = store.get_run(run_id)
    if split not in ("test", "val", "train"):
        raise DeepdiveError(f"unknown split {split!r}; analyze test, val, or train (K-fold label issues)")
    if run.status != "finished":
        raise RunError(f"run {run.id} is {run.status}, not finished: it has no final model to analyse"
                       + (f" ({run.error})" if run.error and run.error != run.status else "")
                       + (f"; finish it with: deepdive resume {run.id} --workspace {store.workspace}"
                          if run.resumable else ""))
    # The runs row fixes class names at creation; a run from deepdive.init() that learnt (other) names only at
    # log_evaluation keeps those in its config.
    class_names = run.config.get("class_names") or run.class_names
    # The train split (K-fold label issues) runs one model stage: its images' nearest (other) training images.
    stage_names = STAGES if split != "train" else \
        tuple(s for s in STAGES if s not in MODEL_STAGES or s == "neighbours")
    stages = _Stages(stage_names, progress, f"analyze {run.id[-6:]} {split}")
    notes = []
    try:
        with stages("load"):
            if model is None and split != "train":
                model, note = _load_model(run)
                if note:
                    notes.append(note)
            device = _device_of(model) if device is None else device
            data = _load_split(store, run, split, folds=folds, progress=progress)
        with stages("predict"):
            _probabilities(run, split, data, model, class_names, device, notes, folds, progress)
        with stages("tables"):
            frame = tables.predictions_frame(data.labels, data.probs, data.losses, idx=data.idx)
            if data.folds is not None:
                frame["fold"] = data.folds
            per_class = tables.per_class(frame, class_names)
            counts = tables.confusion(frame["true"], frame["pred"], len(class_names))
            top = tables.top_confusions(frame, TOP_CONFUSIONS)
        with stages("ranking"):
            rank = ranking.ranking_stage(frame, class_names)
            per_class["ap"] = [cv["ap"] if cv["ap"] is not None else np.nan for cv in rank["pr_curves"]]
        with stages("label_issues"):
            # One temperature serves the label issues and the taxonomy's entropy/margin (label_issues.calibrate).
            calibrated = label_issues.calibrate(data.labels, data.probs)
            issues = label_issues.find_issues(data.labels, data.probs, calibrated=calibrated)
            for col in issues.columns:
                frame[col] = issues[col].to_numpy()
            issue_table = label_issues.issues_table(frame, class_names)
        with stages("taxonomy"):
            members = (_member_predictions(model, data.inputs, frame, len(class_names), device)
                       if split != "train" else None)
            frame["category"] = taxonomy.categorize(frame, members, calibrated=calibrated)
        with stages("insight"):
            hint = insight.early_stop(store.epochs(run.id))
        with stages("dynamics"):
            dyn = dynamics.dynamics_stage(run.run_dir, class_names, _train_issue_indices(run, split, issue_table))
        with stages("duplicates"):
            reference = neighbours.reference_set(run)
            dup = duplicates.duplicates_stage(data.inputs, reference, frame,
                                              exclude=data.idx if split == "train" else None)
        with stages("slices"):
            cut, slice_table = slices.slices_stage(data.images, frame, class_names)
        focus = focus_set(frame)

        extra, advice = _no_model_stages(NO_MODEL), None
        frame["emb_x"] = np.float32(np.nan)
        frame["emb_y"] = np.float32(np.nan)
        tmp = _new_tmp_dir(run.run_dir, split)
        try:
            if split != "train":
                recipe = run.config.get("resolved") or {}   # the recipe's, for trained runs
                table = dyn.get("table")     # training labels in doubt (negative AUM), marked among the influential
                doubted = table.loc[table["aum"] < 0, "idx"].to_numpy() if table is not None else None
                extra, advice = _model_stages(stages, model, data, frame, focus, top, class_names,
                                              recipe.get("augment"), tmp, progress, reference,
                                              label_smoothing=recipe.get("label_smoothing", 0.0), doubted=doubted,
                                              robustness_sample=robustness_sample)
            else:
                with stages("neighbours"):
                    extra["neighbours"] = _training_neighbours(run, data, frame, tmp, progress, notes, reference)
            extra["duplicates"] = dup
            extra["slices"] = cut
            with stages("confidence"):   # after the neighbours, whose agreement is one of its trust scores
                extra["confidence"] = confidence.confidence_stage(frame)
            dyn_table = dyn.pop("table", None)
            extra["dynamics"] = dyn
            extra["ranking"] = rank
            with stages("write"):
                summary = _summary(run, class_names, split, data, frame, per_class, counts, top, issue_table,
                                   hint, focus, extra, advice, notes, folds)
                _write_outputs(tmp, frame, data.images, issue_table, advice)
                if dyn_table is not None:
                    _write_parquet(tmp / dynamics.FILE, dyn_table)
                _write_parquet(tmp / slices.FILE, slice_table)
            summary["stage_seconds"] = dict(stages.seconds)
            summary["total_seconds"] = round(sum(stages.seconds.values()), 3)
            _write_json(tmp / "summary.json", summary)
            _swap_in(tmp, run.run_dir / "analysis" / split,
                     lambda: store.save_analysis(run.id, split, summary, summary["stage_seconds"]))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return summary
    finally:
        stages.close()


# ---- inputs ----------------------------------------------------------------------------------------------------
def _load_model(run):
    """(model or None, note). A pickled custom model whose class is not importable here, or one saved as
    weights only, cannot be rebuilt: the analysis then uses the stored predictions and skips model stages."""
    from deepdive.models import load_checkpoint

    path = run.run_dir / "model_best.pt"
    if not path.is_file():
        raise RunError(f"run {run.id} has no model checkpoint ({path} is missing); it cannot be analysed")
    try:
        return load_checkpoint(path, device="cpu"), None
    except RunError as e:
        if run.model_arch == "pickled" or run.dataset == "custom":
            return None, f"model not loadable, model stages skipped: {e}"
        raise


def _device_of(model):
    import torch

    param = next(iter(model.parameters()), None) if model is not None else None
    return param.device if param is not None else torch.device("cpu")


def _load_split(store, run, split, folds=5, progress=True) -> SplitData:
    from deepdive.analysis import stored_inputs

    eval_dir = run.run_dir / "eval"
    if run.dataset == "custom" and split == "train":   # (eval/train_* is log_evaluation's train_data: no recipe)
        raise RunError(f"run {run.id}: train-split label issues retrain the run's recipe on its training data; "
                       "runs logged with log_evaluation have no recipe (analyse their evaluation split instead)")
    if stored_inputs.exists(eval_dir, split):
        return _load_eval_folder(store, run, split, eval_dir)
    if run.dataset == "custom":
        raise RunError(f"run {run.id} has no stored evaluation data for split {split!r} "
                       f"(neither {split}_inputs.npy nor {split}_codes.npy + {split}_values.npy in {eval_dir})")
    ds = _dataset(run)
    if split == "train":
        from deepdive.analysis.label_issues import training_indices

        idx = training_indices(ds.train_labels, run.config)
        data = _from_uint8(ds.train_images[idx], ds.train_labels[idx], idx, source=f"{folds}-fold cross-validation")
        data.dataset = ds
        return data
    if split == "val":
        path = run.run_dir / "val_indices.npy"
        if not path.is_file():
            raise RunError(f"run {run.id} has no val_indices.npy, so its validation split is unknown")
        idx = np.load(path).astype(np.int64)
        return _from_uint8(ds.train_images[idx], ds.train_labels[idx], idx, source="val_indices.npy")
    # test: the stored predictions, when they match this dataset's labels at their indices
    try:
        stored = store.predictions(run.id, "test")
    except RunError:
        stored = None
    if stored is not None and _stored_fits(stored, ds.test_labels, run.class_names):
        data = _from_uint8(ds.test_images[stored["idx"]], stored["true"], stored["idx"], source="stored predictions")
        data.probs, data.losses = stored["probs"], stored["loss"]
        return data
    n = run.config.get("limit_test") or len(ds.test_labels)
    idx = np.arange(min(int(n), len(ds.test_labels)))
    return _from_uint8(ds.test_images[idx], ds.test_labels[idx], idx, source="evaluated")


def _dataset(run):
    from deepdive.data import load_dataset

    src = run.data_source
    data_dir = src.get("location") if src.get("kind") == "data-dir" and Path(src.get("location", "")).is_dir() else None
    ds = load_dataset(run.dataset, data_dir=data_dir, progress=False)
    if list(ds.class_names) != list(run.class_names):
        raise RunError(f"run {run.id} was trained with classes {run.class_names} but dataset {run.dataset!r} "
                       f"has {ds.class_names}")
    return ds


def _stored_fits(stored, labels, class_names) -> bool:
    idx = stored["idx"]
    return (len(idx) > 0 and idx.min() >= 0 and idx.max() < len(labels)
            and stored["probs"].shape[1] == len(class_names) and np.array_equal(labels[idx], stored["true"]))


def _from_uint8(images, labels, idx, source) -> SplitData:
    images = np.ascontiguousarray(images)
    chw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    inputs = chw.astype(np.float32) / 255.0  # our models normalise [0, 1] inputs themselves
    return SplitData(inputs=inputs, images=images, labels=np.asarray(labels, dtype=np.int64),
                     idx=np.asarray(idx, dtype=np.int64), source=source)


def _load_eval_folder(store, run, split, eval_dir) -> SplitData:
    from deepdive.analysis import stored_inputs

    saved = stored_inputs.load(eval_dir, split)
    inputs = saved.read()
    labels_path = eval_dir / f"{split}_labels.npy"
    if not labels_path.is_file():
        raise RunError(f"run {run.id}: {labels_path} is missing")
    labels = np.load(labels_path).astype(np.int64)
    data = SplitData(inputs=inputs, images=display_images(inputs), labels=labels,
                     idx=np.arange(len(labels)), source=saved.source)
    try:
        stored = store.predictions(run.id, split)
    except RunError:
        stored = None
    if stored is not None and np.array_equal(stored["idx"], data.idx) and np.array_equal(stored["true"], labels):
        data.probs, data.losses = stored["probs"], stored["loss"]
    return data


def display_scale(inputs: np.ndarray):
    """(low, span), float32 (C,) each: how display_images maps a set of model inputs (N, C, H, W) onto 0..1 per
    channel. Inputs already in [0, 1] keep their scale (low 0, span 1); anything else (e.g. normalised inputs) is
    min-max scaled over the whole set, which undoes a per-channel affine normalisation."""
    x = np.asarray(inputs, dtype=np.float32)
    channels = x.shape[1]
    if x.min(initial=0.0) >= 0.0 and x.max(initial=0.0) <= 1.0:
        return np.zeros(channels, np.float32), np.ones(channels, np.float32)
    low = x.min(axis=(0, 2, 3))
    span = x.max(axis=(0, 2, 3)) - low
    return low.astype(np.float32), np.where(span > 0, span, 1.0).astype(np.float32)


def display_images(inputs: np.ndarray, scale=None) -> np.ndarray:
    """uint8 pictures of float model inputs (N, C, H, W): (N, H, W) for one channel, (N, H, W, 3) for three,
    the channel mean otherwise; scaled by `scale` (low, span), by default display_scale(inputs)."""
    x = np.asarray(inputs, dtype=np.float32)
    low, span = display_scale(x) if scale is None else scale
    x = (x - np.reshape(low, (1, -1, 1, 1))) / np.reshape(span, (1, -1, 1, 1))
    x = np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] == 3:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return np.rint(x.mean(axis=1)).astype(np.uint8)


def inputs_from_display(shown: np.ndarray, scale) -> np.ndarray:
    """The inverse of display_images: pictures as shown, float (N, C, H, W) in [0, 1] (uint8 pictures / 255), to
    float32 model inputs, given the set's display scale (low, span)."""
    x = np.asarray(shown, dtype=np.float32)
    low, span = (np.reshape(np.asarray(v, np.float32), (1, -1, 1, 1)) for v in scale)
    if x.ndim != 4 or x.shape[1] != low.shape[1]:
        raise DeepdiveError(f"pictures of shape {x.shape} for inputs with {low.shape[1]} channel(s)")
    return np.ascontiguousarray(low + span * x, dtype=np.float32)


# ---- model forward passes ----------------------------------------------------------------------------------------
def outputs_probabilities(out) -> bool:
    """Whether a batch of model outputs (B, C) are probabilities rather than logits: all in [0, 1], each row
    summing to 1 (to 1e-3). Logits that happen to do so for a whole batch are not a case met in practice."""
    out = out.detach()
    return bool(out.numel()) and bool(((out >= 0) & (out <= 1)).all()) and \
        bool(((out.sum(dim=1) - 1).abs() <= 1e-3).all())


def as_logits(out):
    """A batch of model outputs as logits: probabilities (a softmax last) by their log, anything else as it is."""
    import torch

    return out.clamp_min(torch.finfo(out.dtype).tiny).log() if outputs_probabilities(out) else out


def predict(model, inputs: np.ndarray, labels: np.ndarray, num_classes: int, device=None, batch_size=500):
    """(probs (N, C) float32, losses (N,) float32) of `model` on float inputs (N, C, H, W), in eval mode (its mode
    is restored). The model's outputs are read as logits (log-probabilities too, as a log_softmax last gives), or
    as probabilities where a batch's are (in [0, 1], each row summing to 1: a softmax last), which a softmax
    would flatten towards 1/C. Raises DeepdiveError when the model fails on these inputs, outputs the wrong
    number of classes, or outputs NaN/inf."""
    import torch
    import torch.nn.functional as F

    device = _device_of(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    probs, losses = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                xb = torch.as_tensor(inputs[start:start + batch_size], dtype=torch.float32).to(device)
                try:
                    out = model(xb)
                except Exception as e:
                    raise DeepdiveError(f"the model failed on inputs of shape {tuple(xb.shape[1:])} "
                                        f"(dtype float32): {type(e).__name__}: {e}") from e
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise DeepdiveError(f"the model's output has shape {shape} but the run has {num_classes} "
                                        f"classes: expected (batch, {num_classes}) logits")
                out = out.float()
                if not torch.isfinite(out).all():
                    bad = int((~torch.isfinite(out).all(dim=1)).sum())
                    raise DeepdiveError(f"the model output NaN or infinite values for {bad} of the images "
                                        f"{start}..{start + len(xb) - 1}")
                log_p = F.log_softmax(as_logits(out), dim=1)
                yb = torch.as_tensor(labels[start:start + batch_size], dtype=torch.long, device=log_p.device)
                losses.append(F.nll_loss(log_p, yb, reduction="none").cpu())
                probs.append(log_p.exp().cpu())
    finally:
        model.train(was_training)
    if not probs:
        raise DeepdiveError("there are no examples to evaluate (the split is empty)")
    return torch.cat(probs).numpy().astype(np.float32), torch.cat(losses).numpy().astype(np.float32)


def _probabilities(run, split, data, model, class_names, device, notes, folds, progress):
    """Fill data.probs/losses: K-fold out-of-fold predictions for "train"; else the stored predictions (checked
    against the model when there is one) or a fresh evaluation."""
    if split == "train":
        from deepdive.analysis.label_issues import cross_validated_probs

        data.probs, data.losses, data.folds = cross_validated_probs(data.dataset, data.idx, run.config, folds=folds,
                                                                    progress=progress)
    elif data.probs is None:
        if model is None:
            raise RunError(f"run {run.id}: no stored predictions for split {split!r} and the model cannot be "
                           f"loaded ({'; '.join(notes)})")
        data.probs, data.losses = predict(model, data.inputs, data.labels, len(class_names), device=device)
    elif model is not None:
        _check_stored(model, data, len(class_names), device, notes)
    if data.probs.ndim != 2 or data.probs.shape[1] != len(class_names):
        raise RunError(f"the predictions have {data.probs.shape[-1]} classes but the run has {len(class_names)} "
                       f"({', '.join(class_names)})")


def _check_stored(model, data, num_classes, device, notes):
    """Stored predictions are used only if the model reproduces them (on the first batch); otherwise they are
    stale (e.g. the checkpoint was replaced) and the whole split is re-evaluated. This also surfaces a broken
    model (wrong output width, NaN outputs) before any model stage runs."""
    k = min(STORED_CHECK_EXAMPLES, len(data.labels))
    probs, _ = predict(model, data.inputs[:k], data.labels[:k], num_classes, device=device)
    if np.abs(probs - data.probs[:k]).max(initial=0.0) > STORED_TOLERANCE:
        notes.append("the stored predictions did not match the model; the split was re-evaluated")
        data.probs, data.losses = predict(model, data.inputs, data.labels, num_classes, device=device)
        data.source = "evaluated (stored predictions were stale)"


def _member_predictions(model, inputs, frame, num_classes, device):
    """(M, N) member predictions on the error rows (-1 elsewhere) when the model is an ensemble, else None:
    members that disagree mark an error 'ambiguous'."""
    members = getattr(model, "members", None)
    rows = np.flatnonzero(~frame["correct"].to_numpy())
    if members is None or len(members) < 2 or len(rows) == 0:
        return None
    out = np.full((len(members), len(frame)), -1, dtype=np.int64)
    labels = frame["true"].to_numpy()[rows]
    for m, member in enumerate(members):
        probs, _ = predict(member, inputs[rows], labels, num_classes, device=device)
        out[m, rows] = probs.argmax(axis=1)
    return out


def _training_neighbours(run, data, frame, out_dir, progress, notes, reference) -> dict:
    """The train split's nearest training images in the run's own model's features, each image's own copy left
    out (the K-fold models that gave the probabilities are not kept)."""
    import torch

    from deepdive.analysis import embedding, neighbours

    try:   # after minutes of K-fold retraining, a broken checkpoint costs the neighbours only
        model, note = _load_model(run)
    except RunError as e:
        model, note = None, str(e)
    if model is None:
        notes.append(f"no nearest training images: {note}")
        return {"available": False, "reason": NO_MODEL}
    features = embedding.penultimate_features(model, torch.as_tensor(data.inputs), batch_size=500)
    return neighbours.neighbours_stage(model, features, reference, frame, out_dir, progress, exclude=data.idx)


def focus_set(frame) -> dict:
    """Rows with precomputed activations: the errors (the FOCUS_ERROR_CAP most confident if there are more), one
    representative per class (its most confident correct example, else its highest p[true] one), and the
    FOCUS_LABEL_ISSUES top-ranked label issues. Order: errors, representatives, label issues; no duplicates."""
    from deepdive.analysis.tables import by_confidence, probs_of

    errors = by_confidence(frame[~frame["correct"]]).index.to_numpy()
    probs = probs_of(frame)
    reps = {}
    for cls in np.unique(frame["true"]):
        members = frame.index[frame["true"] == cls].to_numpy()
        correct = members[frame["correct"].to_numpy()[members]]
        pool = correct if len(correct) else members
        key = frame["confidence"].to_numpy()[pool] if len(correct) else probs[pool, cls]
        reps[int(cls)] = int(pool[np.argmax(key)])
    issues = frame.index[frame["label_issue"]].to_numpy()
    issues = issues[np.argsort(frame["issue_rank"].to_numpy()[issues], kind="stable")][:FOCUS_LABEL_ISSUES]
    order = [*errors[:FOCUS_ERROR_CAP].tolist(), *reps.values(), *issues.tolist()]
    indices = list(dict.fromkeys(int(i) for i in order))
    return {"indices": indices, "errors": [int(i) for i in errors[:FOCUS_ERROR_CAP]], "errors_total": len(errors),
            "error_cap": FOCUS_ERROR_CAP, "representatives": {str(c): r for c, r in reps.items()},
            "label_issues": [int(i) for i in issues]}


def _model_stages(stages, model, data, frame, focus, top, class_names, augment, out_dir, progress, reference=None,
                  label_smoothing=0.0, doubted=None, robustness_sample=500):
    """Saliency, activations, channels, embedding, nearest training images, the training images behind each error,
    what fools the model and augmentation advice (deepdive.analysis.{saliency, activations, channels, embedding,
    neighbours, influence, robustness, advice}). Returns (summary entries, advice dict)."""
    import torch

    if model is None:
        for name in MODEL_STAGES:
            stages.seconds[name] = 0.0
        return _no_model_stages(NO_MODEL), None
    extra = {}
    inputs = torch.as_tensor(data.inputs)
    labels = torch.tensor(data.labels)
    preds = torch.tensor(frame["pred"].to_numpy())
    with stages("saliency"):
        from deepdive.analysis import saliency

        # The focus errors, most confident first (capped), so saliency cost stays bounded on a weak model.
        info = saliency.saliency_stage(model, inputs, labels, preds, data.probs, out_dir, progress=progress,
                                       error_idx=np.asarray(focus["errors"], dtype=np.int64))
        extra["saliency"] = info
    with stages("activations"):
        from deepdive.analysis import activations

        info = activations.activations_stage(model, inputs, np.asarray(focus["indices"], dtype=np.int64), out_dir)
        extra["activations"] = {"available": True, **info}
        extra["architecture"] = {"available": True, **activations.architecture(model, inputs[:1])}
    with stages("channels"):
        from deepdive.analysis import channels

        extra["channels"] = channels.channels_stage(model, inputs, data.labels, data.probs, focus["errors"], out_dir)
    with stages("embedding"):
        from deepdive.analysis import embedding

        features = embedding.penultimate_features(model, inputs)
        xy = embedding.project_2d(features, seed=0)
        frame["emb_x"], frame["emb_y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
        extra["embedding"] = {"available": True, "features": int(features.shape[1]), "method": "openTSNE"}
    with stages("neighbours"):
        from deepdive.analysis import neighbours

        extra["neighbours"] = neighbours.neighbours_stage(model, features, reference, frame, out_dir, progress)
    with stages("influence"):
        from deepdive.analysis import influence

        extra["influence"] = influence.influence_stage(model, data.inputs, data.labels, focus["errors"], reference,
                                                       label_smoothing or 0.0, out_dir, progress, doubted)
    with stages("robustness"):
        from deepdive.analysis import robustness

        extra["robustness"] = robustness.robustness_stage(model, data.inputs, data.labels, frame["pred"].to_numpy(),
                                                          focus["errors"], len(class_names), out_dir, progress,
                                                          sample=robustness_sample)
    with stages("advice"):
        from deepdive.analysis import advice as advice_mod

        probes = advice_mod.robustness_probes(model, inputs, labels, len(class_names))
        suggestions = advice_mod.recommend(probes, top, current_augment=augment, class_names=class_names)
        pictures = advice_mod.broken_examples(inputs, labels, probes, suggestions)
    return extra, {"probes": probes, "suggestions": suggestions, "pictures": pictures}


# ---- outputs -------------------------------------------------------------------------------------------------
def _summary(run, names, split, data, frame, per_class, counts, top, issue_table, hint, focus, extra, advice, notes,
             folds) -> dict:
    from deepdive import __version__
    from deepdive.analysis import label_issues, tables, taxonomy

    n = len(frame)
    errors = int((~frame["correct"]).sum())
    per_class_rows = []
    for row in per_class.to_dict("records"):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        row["error_rows"] = [int(i) for i in tables.class_errors(frame, row["class"]).index]
        per_class_rows.append(row)
    macro = {m: _mean_or_none(per_class[m]) for m in ("recall", "precision", "f1", "ap")}
    issue_source = (f"{folds}-fold cross-validated probabilities" if split == "train"
                    else "the model's own probabilities")
    return {
        "run_id": run.id, "split": split, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "deepdive_version": __version__, "data_source": data.source,
        "n": n, "accuracy": float(frame["correct"].mean()) if n else None, "error_count": errors,
        "mean_loss": float(frame["loss"].mean()) if n else None,
        "num_classes": len(names), "class_names": names,
        "image_shape": list(data.inputs.shape[1:]), "display_shape": list(data.images.shape[1:]),
        "per_class": per_class_rows, "macro": macro,
        "confusion": {"counts": counts.tolist(), "normalized": tables.normalize_rows(counts).round(6).tolist()},
        "top_confusions": [{**t, "true_name": names[t["true"]], "pred_name": names[t["pred"]]} for t in top],
        "label_issues": {"count": len(issue_table), "source": issue_source, "method": label_issues.METHOD,
                         "top": issue_table["row"].head(FOCUS_LABEL_ISSUES).tolist()},
        "taxonomy": {**taxonomy.describe(), **taxonomy.counts(frame, names)},
        "insight": hint,
        "advice": advice["suggestions"] if advice else None,
        "focus": focus,
        "notes": list(notes),
        **extra,
    }


def _mean_or_none(series):
    values = series.dropna()
    return float(values.mean()) if len(values) else None


def _write_outputs(folder: Path, frame, images, issue_table, advice):
    from deepdive.atomic import atomic_save_npy

    _write_parquet(folder / "examples.parquet", frame)
    atomic_save_npy(folder / "images.npy", np.ascontiguousarray(images))
    _write_parquet(folder / "label_issues.parquet", issue_table)
    if advice is not None:
        _write_json(folder / "advice.json", {k: v for k, v in advice.items() if k != "pictures"})
        if advice.get("pictures") is not None:   # the images each suggestion's probes break, as perturbed
            atomic_save_npy(folder / "advice_images.npy", advice["pictures"])


def _write_parquet(path, table):
    from deepdive.atomic import atomic_write_bytes

    atomic_write_bytes(path, table.to_parquet(index=False))


def _train_issue_indices(run, split, issue_table):
    """Dataset indices of the training images cleanlab flagged (`--label-issues train`): this analysis' own when it
    is the train split's, else the stored train analysis', else None."""
    if split == "train":
        return issue_table["idx"].to_numpy()
    path = run.run_dir / "analysis" / "train" / "label_issues.parquet"
    if not path.is_file():
        return None
    import pandas as pd

    return pd.read_parquet(path, columns=["idx"])["idx"].to_numpy()


def _write_json(path, obj):
    from deepdive.atomic import atomic_write_text
    from deepdive.store import to_json

    atomic_write_text(path, to_json(obj))


def _new_tmp_dir(run_dir: Path, split: str) -> Path:
    parent = run_dir / "analysis"
    parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in parent.glob(f"{split}.*-*"):
        if (old.name.startswith(f"{split}.tmp-") or old.name.startswith(f"{split}.old-")) \
                and now - old.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    tmp = parent / f"{split}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def _swap_in(tmp: Path, final: Path, commit):
    """Replace `final` by `tmp` (two renames), then run `commit` (the store row); on failure restore the old
    folder. A still-valid verify_advice.json of the old analysis (same model, same split) is carried over."""
    old = None
    if final.exists():
        verification = final / "verify_advice.json"
        if verification.is_file() and not (tmp / "verify_advice.json").exists():
            shutil.copy2(verification, tmp / "verify_advice.json")
        old = final.with_name(f"{final.name}.old-{secrets.token_hex(4)}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    try:
        commit()
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

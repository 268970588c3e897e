"""The analysis tables, computed from labels and class probabilities alone (numpy + pandas, no model).

Conventions shared by every analysis output: a *row* is a position in the analysed split (row i of
examples.parquet is row i of images.npy); the `idx` column is that example's index in its dataset split (equal to
the row for the test split, an index into the train split for "val"). All index lists in summary.json are rows.
"""
import numpy as np
import pandas as pd

from deepdive.errors import DeepdiveError

# Columns of the predictions frame before the later stages add label_issue, label_quality, suggested_label,
# category, emb_x, emb_y. p0..p{C-1} follow these.
BASE_COLUMNS = ["idx", "true", "pred", "confidence", "margin", "loss", "correct", "entropy"]


def prob_columns(num_classes: int) -> list[str]:
    return [f"p{c}" for c in range(num_classes)]


def validate_probs(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """probs as float (N, C) finite and non-negative rows summing to ~1, labels as int64 (N,) in [0, C)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise DeepdiveError(f"class probabilities must have shape (N, num_classes >= 2), got {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise DeepdiveError(f"labels must have shape ({probs.shape[0]},) to match the probabilities, "
                            f"got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DeepdiveError(f"labels must be integers, got dtype {labels.dtype}")
    if not np.isfinite(probs).all():
        bad = int((~np.isfinite(probs).all(axis=1)).sum())
        raise DeepdiveError(f"the model's output has NaN or infinite values for {bad} of {len(probs)} examples")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise DeepdiveError(f"labels must lie in [0, {probs.shape[1] - 1}] (one per output class), "
                            f"got values from {labels.min()} to {labels.max()}")
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise DeepdiveError("class probabilities must be non-negative and sum to 1 per example")
    return probs.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


def predictions_frame(true, probs, losses=None, idx=None) -> pd.DataFrame:
    """One row per example: idx, true, pred, confidence, margin, loss, correct, entropy, p0..p{C-1}.

    margin = top probability minus the runner-up's; entropy in nats (normalise by ln C for a 0..1 scale);
    loss defaults to the cross-entropy -ln p[true] when no losses are given.
    """
    probs, true = validate_probs(probs, true)
    n, c = probs.shape
    order = np.argsort(-probs, axis=1, kind="stable")
    top2 = np.take_along_axis(probs, order[:, :2], axis=1)
    p_true = probs[np.arange(n), true]
    if losses is None:
        losses = -np.log(np.clip(p_true, 1e-12, None))
    losses = np.asarray(losses, dtype=np.float32)
    if losses.shape != (n,):
        raise DeepdiveError(f"losses must have shape ({n},), got {losses.shape}")
    idx = np.arange(n) if idx is None else np.asarray(idx, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    frame = pd.DataFrame({
        "idx": idx.astype(np.int64),
        "true": true,
        "pred": order[:, 0].astype(np.int64),
        "confidence": top2[:, 0].astype(np.float32),
        "margin": (top2[:, 0] - top2[:, 1]).astype(np.float32),
        "loss": losses,
        "correct": order[:, 0] == true,
        "entropy": entropy.astype(np.float32),
    })
    return pd.concat([frame, pd.DataFrame(probs, columns=prob_columns(c))], axis=1)


def probs_of(frame: pd.DataFrame) -> np.ndarray:
    """The (N, C) probability matrix held in a predictions frame's p0..p{C-1} columns."""
    cols = [col for col in frame.columns if col.startswith("p") and col[1:].isdigit()]
    cols.sort(key=lambda col: int(col[1:]))
    return frame[cols].to_numpy(dtype=np.float32)


def by_confidence(frame: pd.DataFrame) -> pd.DataFrame:
    """Most confident first; ties keep row order (stable sort), so results are deterministic."""
    return frame.sort_values("confidence", ascending=False, kind="stable")


def confusion(true, pred, num_classes: int) -> np.ndarray:
    """counts[t, p] = number of examples of true class t predicted as p."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(true), np.asarray(pred)), 1)
    return counts


def normalize_rows(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the recall view); a class with no examples gets a row of zeros."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def per_class(frame: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """One row per class: support, predicted, correct, errors, recall, precision, f1.

    recall = correct / support (the class's accuracy), precision = correct / predicted, F1 = 2TP / (2TP+FP+FN).
    Undefined ratios (a class never present, or never predicted) are NaN rather than a made-up 0.
    """
    c = len(class_names)
    counts = confusion(frame["true"], frame["pred"], c)
    tp = np.diag(counts).astype(np.float64)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    return pd.DataFrame({
        "class": np.arange(c), "name": list(class_names), "support": support, "predicted": predicted,
        "correct": tp.astype(np.int64), "errors": support - tp.astype(np.int64),
        "recall": recall, "precision": precision, "f1": f1,
    })


def class_errors(frame: pd.DataFrame, cls: int) -> pd.DataFrame:
    """The misclassified examples of true class `cls`, most confident (most wrong) first."""
    return by_confidence(frame[(frame["true"] == cls) & ~frame["correct"]])


def groups(frame: pd.DataFrame) -> pd.DataFrame:
    """(true, pred) groups ordered by true class then predicted class: count and rows (most confident first)."""
    ordered = by_confidence(frame)
    grouped = ordered.groupby(["true", "pred"], sort=True)
    out = grouped.size().rename("count").reset_index()
    rows = grouped.apply(lambda g: g.index.to_list(), include_groups=False)
    out["rows"] = [rows[(t, p)] for t, p in zip(out["true"], out["pred"])]
    return out


def group_rows(frame: pd.DataFrame, true: int, pred: int) -> pd.DataFrame:
    """Examples of true class `true` predicted as `pred`, most confident first."""
    return by_confidence(frame[(frame["true"] == true) & (frame["pred"] == pred)])


def top_confusions(frame: pd.DataFrame, k: int = 10) -> list[dict]:
    """The k most frequent (true, pred) error pairs: count desc, then true, then pred; rows most confident first."""
    errors = groups(frame[~frame["correct"]])
    if errors.empty:
        return []
    errors = errors.sort_values(["count", "true", "pred"], ascending=[False, True, True], kind="stable").head(k)
    return [{"true": int(t), "pred": int(p), "count": int(n), "indices": [int(r) for r in rows]}
            for t, p, n, rows in zip(errors["true"], errors["pred"], errors["count"], errors["rows"])]
